"""Clinical figures with their uncertainty: confusion matrices, per-class rows and 95 % intervals.

A medical test set of one task is often small (tens of images) and may hold several images of
one patient, so one accuracy per task says too little. Everything here is plain numbers in,
plain numbers out (no torch), seeded and deterministic, and JSON-safe where it says so:
``metrics.json`` is strict JSON, and ``json.dumps`` would write NaN, which no strict reader
accepts, so an undefined figure is ``None``.

Intervals: a proportion of independent images gets the Wilson score interval (well behaved at
0 %, 100 % and on few images, where a bootstrap collapses to one point). Proportions of images
that patient ``groups`` cluster, the AUROC and means over tasks get a seeded percentile
bootstrap; with ``groups`` whole patients are resampled (cluster bootstrap), since images of one
patient are not independent.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

N_BOOT = 2000
SEED = 0
FEW_IMAGES = 30  # below this many images an interval is wide: the formatter says so
_CELLS = 2_000_000  # bootstrap weights held at once (resamples x images), 16 MB of int64


def wilson_interval(k, n, level=0.95):
    """Wilson score interval of ``k`` successes in ``n`` trials, as ``(lo, hi)`` in 0..1; NaN when n = 0."""
    if n == 0:
        return (math.nan, math.nan)
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def confusion(y_true, y_pred, n_classes):
    """(k, k) counts, row = true class, column = predicted class, every class present even if unseen."""
    if len(y_true) == 0:  # sklearn refuses empty input
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    return confusion_matrix(y_true, y_pred, labels=range(n_classes))


def balanced_accuracy(y_true, y_pred):
    """Mean sensitivity over the classes present (sklearn); NaN without images."""
    if len(y_true) == 0:
        return math.nan
    with warnings.catch_warnings():  # a predicted class with no true image is expected on small sets
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


# ------------------------------------------------------------------------------- bootstrap
def _weight_chunks(n, groups, n_boot, seed):
    """Bootstrap resamples as per-image multiplicities, in chunks of (b, n) int arrays, whole groups at a time.

    scipy.stats.bootstrap resamples observations, not clusters, so patients are resampled here
    with numpy: a resample draws as many groups as there are, with replacement, and every image
    counts as often as its group was drawn. Without groups each image is its own group (the
    ordinary bootstrap), so per-image and per-patient intervals differ only by the clustering.
    """
    rng = np.random.default_rng(seed)
    members = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    n_groups = int(members.max()) + 1
    step = max(1, _CELLS // n)
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        drawn = rng.integers(0, n_groups, (b, n_groups)) + n_groups * np.arange(b)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=b * n_groups).reshape(b, n_groups)
        yield counts if groups is None else counts[:, members]


def _interval(draws, level):
    """Percentile interval of bootstrap draws, ignoring resamples where the figure is undefined."""
    draws = np.asarray(draws, dtype=float)
    if not np.isfinite(draws).any():
        return (math.nan, math.nan)
    tail = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(draws, [tail, 1.0 - tail])
    return (float(lo), float(hi))


def accuracy_draws(correct, groups=None, n_boot=N_BOOT, seed=SEED):
    """Bootstrap draws of the share of ``correct`` images (0..1), resampling ``groups`` when given:
    (n_boot,) for (N,) ``correct``, (n_boot, m) for (N, m), every column on the same resamples."""
    correct = np.asarray(correct, dtype=float)
    if len(correct) == 0:
        return np.full((n_boot,) + correct.shape[1:], np.nan)
    parts = []
    for w in _weight_chunks(len(correct), groups, n_boot, seed):
        sizes = w.sum(1)
        parts.append(w @ correct / (sizes[:, None] if correct.ndim > 1 else sizes))
    return np.concatenate(parts)


def clustered(groups, n):
    """Whether ``groups`` put several of the ``n`` images in one group (their intervals then resample groups)."""
    return groups is not None and len(np.unique(np.asarray(groups))) < n


def accuracy_interval(correct, groups=None, level=0.95, draws=None, n_boot=N_BOOT, seed=SEED):
    """Interval (0..1) of the accuracy of boolean ``correct``: Wilson for independent images, the
    cluster bootstrap when ``groups`` (patient codes) put several images in one group (``draws``:
    :func:`accuracy_draws` already made for these images and groups)."""
    correct = np.asarray(correct, dtype=bool)
    if not clustered(groups, len(correct)):
        return wilson_interval(int(correct.sum()), len(correct), level)
    return _interval(accuracy_draws(correct, groups, n_boot, seed) if draws is None else draws, level)


def mean_interval(draws, level=0.95):
    """Interval of a mean over tasks (each task counts once, as TAw and TAg do) from each task's own
    bootstrap draws (every task resampled within itself, with its own seed); tasks without images are left out."""
    draws = [d for d in draws if np.isfinite(d).any()]
    return _interval(np.mean(draws, axis=0), level) if draws else (math.nan, math.nan)


def auroc(is_positive, score):
    """One-vs-rest AUROC (sklearn); NaN when all images have one label or no score is given."""
    is_positive = np.asarray(is_positive, dtype=bool)
    if score is None or is_positive.all() or not is_positive.any():
        return math.nan
    return float(roc_auc_score(is_positive, score))


def _auroc_ranks(is_positive, score):
    """What :func:`_auroc_draws` needs, computed once per class: the positives, the negatives sorted by
    score, and per positive how many sorted negatives score below it and not above it."""
    score = np.asarray(score)
    pos, neg = np.flatnonzero(is_positive), np.flatnonzero(~np.asarray(is_positive, dtype=bool))
    neg = neg[np.argsort(score[neg], kind="stable")]
    return pos, neg, np.searchsorted(score[neg], score[pos], "left"), np.searchsorted(score[neg], score[pos], "right")


def _auroc_draws(ranks, weights):
    """AUROC for every row of (b, n) integer ``weights`` at once (ties count one half), NaN where one label
    has no weight. Written out because roc_auc_score takes one weighting per call and 2,000 calls
    per class cost seconds: twice the Mann-Whitney U in integers, from cumulative negative weights."""
    pos, neg, lo, hi = ranks
    below = np.zeros((len(weights), len(neg) + 1), dtype=np.int64)
    np.cumsum(weights[:, neg], axis=1, out=below[:, 1:])
    w_pos = weights[:, pos]
    u2 = (w_pos * (below[:, lo] + below[:, hi])).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return u2 / (2.0 * w_pos.sum(1) * below[:, -1])


def aurocs(y_true, proba, n_classes, groups=None, level=0.95, n_boot=N_BOOT, seed=SEED):
    """Each class's one-vs-rest AUROC from (N, >= k) ``proba`` and its bootstrap interval, as
    ``(auroc, (lo, hi))`` per class, all classes on the same resamples (patients resampled with
    ``groups``); NaN where the AUROC is undefined."""
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    point = [auroc(y_true == c, proba[:, c]) for c in range(n_classes)]
    ranks = {c: _auroc_ranks(y_true == c, proba[:, c]) for c in range(n_classes) if not math.isnan(point[c])}
    draws = {c: [] for c in ranks}
    for weights in _weight_chunks(len(y_true), groups, n_boot, seed) if ranks else ():
        for c in ranks:
            draws[c].append(_auroc_draws(ranks[c], weights))
    return [(point[c], _interval(np.concatenate(draws[c]), level) if c in draws else (math.nan, math.nan))
            for c in range(n_classes)]


# ------------------------------------------------------------------------------- per class
def per_class_rows(y_true, y_pred, proba=None, n_classes=None, class_names=None, groups=None, level=0.95,
                   n_boot=N_BOOT, seed=SEED):
    """One JSON-safe row per class of a k-class problem, that class against all others.

    ``proba`` (N, >= k) holds each image's class probabilities (AUROC needs them; without, it is
    None). Proportions are in 0..1, each a share of right answers within a subset of the images
    (sensitivity: the images of the class; PPV: those predicted as it), with the interval of
    :func:`accuracy_interval` over that subset (``*_ci95``: Wilson, or patients resampled where
    ``groups`` cluster them); the AUROC has a bootstrap interval; F1 is no proportion and has none.
    Undefined figures (a class without images, never predicted) are None.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    groups = None if groups is None else np.asarray(groups)
    k = n_classes if n_classes is not None else len(class_names)
    f1 = f1_score(y_true, y_pred, labels=range(k), average=None, zero_division=np.nan) if len(y_true) else np.full(k, np.nan)
    areas = [(math.nan, (math.nan, math.nan))] * k if proba is None else aurocs(y_true, proba, k, groups, level, n_boot, seed)
    rows = []
    for c in range(k):
        is_c, said_c = y_true == c, y_pred == c
        row = {"class": class_names[c] if class_names is not None else c, "n": int(is_c.sum())}
        for name, subset, right in (("sensitivity", is_c, said_c), ("specificity", ~is_c, ~said_c),
                                    ("ppv", said_c, is_c), ("npv", ~said_c, ~is_c)):
            row[name] = right[subset].mean() if subset.any() else math.nan
            row[f"{name}_ci95"] = accuracy_interval(right[subset], None if groups is None else groups[subset], level,
                                                    n_boot=n_boot, seed=seed)
        row["f1"] = f1[c]
        row["auroc"], row["auroc_ci95"] = areas[c]
        rows.append(json_safe(row))
    return rows


# ------------------------------------------------------------------------------- output
def json_safe(value):
    """``value`` with numpy numbers as Python numbers, tuples and arrays as lists and NaN / inf as None."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _defined(ci):
    return ci is not None and all(v is not None and math.isfinite(v) for v in ci)


def format_estimate(value, ci, digits=2):
    """``"0.93 (0.85–0.97)"``, the value alone without an interval, ``"–"`` when undefined."""
    if value is None or not math.isfinite(value):
        return "–"
    if not _defined(ci):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})"


def format_accuracy(acc_percent, ci, n):
    """``"88.9 % (95 % CI 56.5–98.0, 9 images)"`` (all in %), with a warning below 30 images."""
    if not n:
        return "no test images"
    images = f"{n} image{'s' if n != 1 else ''}"
    text = f"{acc_percent:.1f} % (95 % CI {ci[0]:.1f}–{ci[1]:.1f}, {images})" if _defined(ci) \
        else f"{acc_percent:.1f} % ({images})"
    if n < FEW_IMAGES:
        text += f"; fewer than {FEW_IMAGES} images: read with care"
    return text


TABLE_FIGURES = ("sensitivity", "specificity", "ppv", "npv", "auroc")


def per_class_table(rows):
    """The rows of :func:`per_class_rows` as display strings, one dict per class (the app's and reports' table)."""
    return [{"class": str(r["class"]), "images": r["n"],
             **{name: format_estimate(r[name], r[f"{name}_ci95"]) for name in TABLE_FIGURES},
             "f1": format_estimate(r["f1"], None)} for r in rows]
