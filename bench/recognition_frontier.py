"""The recognition frontier (issue 28, item 1): task recognition and TAg against stored bytes.

Step 1 (``extract``, once per seed): learn BloodMNIST 4 x 2 with the default settings (as
``rerelrp run --data bloodmnist.npz --tasks 4`` does), then cache what the recognisers see:
the store's own training rows (``store_.rows[m][t]``, exactly what the package's forests are fitted
on), every sub-network's recogniser columns for the validation and test images (read with
``Subnetworks.stacked``, as prediction reads them), each sub-network's class and logits, and,
from plain forward passes, the kept-unit activations and logits of *all* training images of task
t through every sub-network m <= t (what a statistics store could accumulate without keeping rows).
The cache holds per-image records of real images: it goes under /tmp, never into the repository.

Step 2 (``evaluate``): recognisers (a) forests on rows as the package fits them (fewer rows, fewer
features, float16 rows), (b) the replay exemplars the same bytes buy (bytes / 2352, reported
beside), (c) recognisers on statistics: Gaussians of each sub-network's features per task (and per
class) with shrinkage covariance (Ledoit-Wolf, OAS), full, low rank plus diagonal or diagonal;
the generative posterior in sub-network m ("task m" against the later tasks, TPL's likelihood
ratio) through the chain, the Mahalanobis score of Lee et al. (max over classes, tied covariance),
a TPL-style argmax, and energy / max-logit scores. Every setting is chosen on validation images
(mean over the seeds run); test images only give the reported numbers.

    OMP_NUM_THREADS=1 .venv/bin/python bench/recognition_frontier.py --seeds 0,1,2
    OMP_NUM_THREADS=1 .venv/bin/python bench/recognition_frontier.py --quick      # smoke run, minutes

``--steps extract`` or ``--steps evaluate`` runs one step (the cache is reused when it exists); ``--steps table``
writes the table and the plot again from ``results.json``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.linalg import solve_triangular

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "medmnist" / "bloodmnist.npz"
CACHE = Path("/tmp/rerelrp_frontier")
IMAGE_BYTES = 28 * 28 * 3  # one uint8 BloodMNIST exemplar: 2,352 bytes
BUDGET = 8 * 20 * IMAGE_BYTES  # replay's 20 images per class: 376,320 bytes
TARGETS = {"recognition": 94.0, "tag": 92.0, "bytes": BUDGET}
QUICK = {"epochs": 1, "min_steps": 10, "relevance_samples": 64, "prune_samples": 128, "recognizer_samples": 128,
         "n_trees": 10}
UNIT_LIST = 8  # bytes of one (layer, unit) int32 pair in the store


# =================================================================================== step 1
def extract(seed, path, quick=False):
    """Train one learner, cache the recogniser rows of store, validation and test images in ``path``."""
    import torch

    from rerelrp.data import build_sequence, load_dataset
    from rerelrp.method.learner import ReReLRP
    from rerelrp.method.predictor import Predictor
    from rerelrp.method.recognition import ForestRecognition
    from rerelrp.model.inputs import LazyInputs

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tasks = build_sequence([load_dataset(str(DATA), seed=seed)], 4)
    learner = ReReLRP(seed=seed, recognizer="forest", **(QUICK if quick else {}))  # the study ran before the default changed
    clock = time.perf_counter()
    for task in tasks:
        learner.add_task(task)
        print(f"seed {seed}: task {learner.n_tasks - 1} learned ({time.perf_counter() - clock:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - clock
    limit = 200 if quick else None
    T, store, sizes = learner.n_tasks, learner.store_, learner.ledger_.layer_sizes
    U = learner.ledger_.n_units
    sub = learner._subnetworks()
    predictor = Predictor(sub, learner.input_size_, ForestRecognition(store, learner.recognizers_), learner.class_names_,
                          learner.scope_rate)
    columns = [store.columns(m, sizes) for m in range(T)]
    out = {"offsets": np.asarray(learner.offsets_), "T": np.array(T)}
    for m in range(T):
        out[f"n_rel/{m}"] = np.array(len(store.features[m]))
        out[f"n_act/{m}"] = np.array(len(store.active[m]))
        for t, block in store.rows[m].items():
            out[f"store/{m}/{t}"] = block
    clock = time.perf_counter()
    for split in ("val", "test"):
        for t, task in enumerate(tasks):
            part = task.split(split)
            n = len(part) if limit is None else min(limit, len(part))
            classes, logits, rows, p_t = [], [], [[] for _ in range(T)], []
            for start in range(0, n, 256):
                images = part.images[start: min(n, start + 256)]
                subnet_class, lg, units, _, _ = sub.stacked(images, learner.input_size_)
                classes.append(subnet_class)
                logits.append(lg.numpy())
                p_t.append(predictor.recognise(units))
                for m in range(T):
                    rows[m].append(units[:, m, columns[m]].astype(np.float32))
            out[f"{split}/{t}/labels"] = part.labels[:n]
            out[f"{split}/{t}/class"] = np.concatenate(classes)
            out[f"{split}/{t}/logits"] = np.concatenate(logits).astype(np.float32)
            out[f"{split}/{t}/p_package"] = np.concatenate(p_t)  # the package's own P_T (its fitted forests)
            for m in range(T):
                out[f"{split}/{t}/{m}"] = np.concatenate(rows[m])
        print(f"seed {seed}: {split} rows read ({time.perf_counter() - clock:.0f} s)", flush=True)
    for t, task in enumerate(tasks):  # every training image, forward passes only: activations and logits
        images = task.train.images if limit is None else task.train.images[: limit * 2]
        x = LazyInputs(images, learner.input_size_)
        for m in range(t + 1):
            lg, acts = sub.forward_signals(x, m)
            out[f"all/{t}/{m}/acts"] = acts[:, columns[m][len(store.features[m]):] - U].numpy().astype(np.float32)
            out[f"all/{t}/{m}/logits"] = lg.numpy().astype(np.float32)
        out[f"all/{t}/labels"] = task.train.labels[: len(images)]
    print(f"seed {seed}: training activations read ({time.perf_counter() - clock:.0f} s)", flush=True)
    nodes = [int(sum(e.tree_.node_count for e in forest.estimators_)) for forest in learner.recognizers_]
    meta = {"seed": seed, "quick": quick, "T": T, "train_seconds": train_seconds, "read_seconds":
            time.perf_counter() - clock, "settings": learner.get_params(), "forest_nodes": nodes,
            "stored_bytes": [h.stored_bytes for h in learner.history_],
            "kept_units": [h.prune["kept_units"] for h in learner.history_],
            "n_units": int(U), "layer_sizes": {k: int(v) for k, v in sizes.items()},
            "threads": torch.get_num_threads()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta=np.array(json.dumps(meta)), **out)
    print(f"seed {seed}: cached in {path}", flush=True)


# =================================================================================== step 2
class Cache:
    """One seed's cached rows. ``X(split, t, m)``: task t's images through recogniser m's columns."""

    def __init__(self, path):
        z = np.load(path)
        self.z = {k: z[k] for k in z.files}
        self.meta = json.loads(str(self.z["meta"]))
        self.T = int(self.z["T"])
        self.offsets = self.z["offsets"]
        self.n_rel = [int(self.z[f"n_rel/{m}"]) for m in range(self.T)]

    def store(self, m, t):
        return self.z[f"store/{m}/{t}"]

    def X(self, split, t, m):
        return self.z[f"{split}/{t}/{m}"]

    def n(self, split, t):
        return len(self.z[f"{split}/{t}/labels"])

    def logits(self, split, t, m):
        return self.z[f"{split}/{t}/logits"][:, m]

    def labels(self, split, t):
        return self.z[f"{split}/{t}/labels"]


def score(cache, split, p_t):
    """Recognition (pooled over images, %) and TAg (mean over tasks, %) from P_T of every task's images."""
    hits, tag = [], []
    for t in range(cache.T):
        task = p_t[t].argmax(1)
        local = cache.z[f"{split}/{t}/class"][np.arange(len(task)), task]
        hits.append(task == t)
        tag.append(100.0 * np.mean((task == t) & (local == cache.labels(split, t))))
    return {"recognition": 100.0 * float(np.mean(np.concatenate(hits))), "tag": float(np.mean(tag)),
            "per_task": [100.0 * float(np.mean(h)) for h in hits]}


def chain(p_r):
    from rerelrp.method.recognition import chain_probabilities

    return chain_probabilities(p_r)


# ------------------------------------------------------------------------ (a) forests on rows
def forest_variant(cache, n_rows=None, k_rel=None, acts=True, float16=False, n_trees=None, seed=None):
    """Forests as the package fits them, on a reduced store; returns P_T per split and task, and bytes."""
    from rerelrp.method.recognition import fit_recognizer, in_task_probability

    seed = cache.meta["seed"] if seed is None else seed
    n_trees = cache.meta["settings"]["n_trees"] if n_trees is None else n_trees
    T, rng = cache.T, np.random.default_rng([seed, 28])
    pick, nbytes, models = [], 0, []
    for m in range(T - 1):
        n_rel = cache.n_rel[m]
        order = np.argsort(-np.abs(cache.store(m, m)[:, :n_rel]).mean(0), kind="stable")  # the package's ranking
        rel = np.sort(order[: n_rel if k_rel is None else k_rel])
        width = cache.store(m, m).shape[1]
        cols = np.concatenate([rel, np.arange(n_rel, width) if acts else np.zeros(0, int)]).astype(int)
        pick.append(cols)
        X, y = [], []
        for t in range(m, T):
            block = cache.store(m, t)
            if n_rows is not None and len(block) > n_rows:
                block = block[np.sort(rng.choice(len(block), n_rows, replace=False))]
            block = block[:, cols]
            if float16:
                block = block.astype(np.float16).astype(np.float32)
            X.append(block)
            y.append(np.full(len(block), int(t == m)))
            nbytes += block.size * (2 if float16 else 4)
        nbytes += len(cols) * UNIT_LIST
        models.append(fit_recognizer(np.concatenate(X), np.concatenate(y), n_trees, seed=seed * 7919 + m))
    # the newest task's own rows are kept too, for the recogniser it gets when the next task comes
    own = cache.store(T - 1, T - 1)
    n_own = min(len(own), n_rows or len(own))
    n_cols = (cache.n_rel[T - 1] if k_rel is None else k_rel) + (own.shape[1] - cache.n_rel[T - 1] if acts else 0)
    nbytes += n_own * n_cols * (2 if float16 else 4) + n_cols * UNIT_LIST
    out = {}
    for split in ("val", "test"):
        out[split] = [chain(np.stack([in_task_probability(models[m], cache.X(split, t, m)[:, pick[m]])
                                      for m in range(T - 1)], 1)) for t in range(T)]
    nodes = sum(sum(e.tree_.node_count for e in f.estimators_) for f in models)
    return out, nbytes, nodes


# ------------------------------------------------------------------------ (c) Gaussians
class LowRankGaussian:
    """N(mean, U diag(lam) U^T + diag(d)): log-density by the Woodbury identity, O(n d k).

    ``U`` is (d, k) with orthonormal columns (k may be 0: diagonal), ``lam`` (k,) >= 0, ``d`` (dim,) > 0.
    """

    def __init__(self, mean, U, lam, d):
        self.mean, self.U, self.lam, self.d = mean, U, lam, d
        k = U.shape[1]
        inner = np.diag(1.0 / np.maximum(lam, 1e-12)) + (U.T / d) @ U if k else np.zeros((0, 0))
        self._chol = np.linalg.cholesky(inner) if k else inner
        self._logdet = (np.sum(np.log(d)) + np.sum(np.log(np.maximum(lam, 1e-12)))
                        + 2.0 * np.sum(np.log(np.diag(self._chol))) if k else np.sum(np.log(d)))

    def logpdf(self, X, means=None):
        """Log-density of rows X (n, dim); with ``means`` (c, dim) sharing this covariance, (n, c)."""
        single = means is None
        means = self.mean[None] if single else means
        diff = X[:, None, :] - means[None]  # (n, c, dim)
        quad = np.einsum("ncd,ncd->nc", diff, diff / self.d)
        if self.U.shape[1]:
            proj = (diff / self.d) @ self.U  # (n, c, k)
            sol = solve_triangular(self._chol, proj.reshape(-1, proj.shape[-1]).T, lower=True)  # L^-1 proj^T
            quad = quad - np.sum(sol ** 2, 0).reshape(quad.shape)
        out = -0.5 * (quad + self._logdet + X.shape[1] * np.log(2 * np.pi))
        return out[:, 0] if single else out

    @property
    def n_params(self):
        return self.U.size + self.lam.size + self.d.size


class FullGaussian:
    """N(mean, cov) by its Cholesky factor (what a full covariance stores: d (d + 1) / 2 numbers)."""

    def __init__(self, mean, cov):
        self.mean = mean
        self._chol = np.linalg.cholesky(cov)
        self._logdet = 2.0 * np.sum(np.log(np.diag(self._chol)))
        self.dim = len(cov)

    def logpdf(self, X, means=None):
        single = means is None
        means = self.mean[None] if single else means
        diff = X[:, None, :] - means[None]
        sol = solve_triangular(self._chol, diff.reshape(-1, self.dim).T, lower=True)
        quad = np.sum(sol ** 2, 0).reshape(diff.shape[:2])
        out = -0.5 * (quad + self._logdet + self.dim * np.log(2 * np.pi))
        return out[:, 0] if single else out

    @property
    def n_params(self):
        return self.dim * (self.dim + 1) // 2


def shrunk_covariance(X, how):
    """(covariance, centred mean) of rows X under a shrinkage estimator: 'lw' (Ledoit-Wolf), 'oas', 'diag'."""
    from sklearn.covariance import OAS, LedoitWolf

    if how == "diag":
        return np.diag(X.var(0)), X.mean(0)
    est = (LedoitWolf if how == "lw" else OAS)(assume_centered=True).fit(X - X.mean(0))
    return est.covariance_, X.mean(0)


def low_rank_plus_diagonal(cov, rank, floor=1e-6):
    """Top-``rank`` eigenvectors of ``cov`` and the diagonal of what they leave: (U, lam, d).

    ``rank=None`` keeps the full covariance (every eigenvector, the residual diagonal at ``floor``).
    """
    dim = len(cov)
    scale = max(float(np.trace(cov)) / dim, 1e-12)
    if rank == 0:
        return np.zeros((dim, 0)), np.zeros(0), np.maximum(np.diag(cov), floor * scale)
    w, V = np.linalg.eigh(cov)
    k = dim if rank is None else min(rank, dim)
    U, lam = V[:, ::-1][:, :k], np.maximum(w[::-1][:k], 0.0)
    resid = np.diag(cov) - np.sum(U ** 2 * lam, 1)
    return U, lam, np.maximum(resid, floor * scale)


def transform(X, how):
    if how == "sqrt":
        return np.sign(X) * np.sqrt(np.abs(X))
    if how == "log":
        return np.sign(X) * np.log1p(np.abs(X) * 100.0)
    return X


def feature_block(cache, kind, source, split, t, m, cols):
    """Rows of task t's images for recogniser m. ``source`` 'store' (the kept rows) or 'all' (every training image,
    activations and logits only); validation / test rows come from the cache in the same columns."""
    if split == "train":
        if source == "store":
            return cache.store(m, t)[:, cols]
        parts = [cache.z[f"all/{t}/{m}/acts"][:, cols - cache.n_rel[m]]] if len(cols) else []
        if kind.endswith("+logits"):
            parts.append(cache.z[f"all/{t}/{m}/logits"][:, : head_size(cache, m)])
        return np.concatenate(parts, 1)
    X = cache.X(split, t, m)[:, cols]
    if kind.endswith("+logits"):
        X = np.concatenate([X, cache.logits(split, t, m)[:, : head_size(cache, m)]], 1)
    return X


def head_size(cache, m):
    return int(cache.offsets[m + 1] - cache.offsets[m])


def columns_of(cache, m, kind):
    n_rel, width = cache.n_rel[m], cache.store(m, m).shape[1]
    base = kind.split("+")[0]
    if base == "act":
        return np.arange(n_rel, width)
    if base == "rel":
        return np.arange(n_rel)
    if base == "none":
        return np.arange(0)
    return np.arange(width)


def gaussian_loglik(cache, cfg):
    """Per recogniser m < T-1 and task s >= m: log-likelihoods of val / test rows, and the bytes kept.

    cfg: features ('act', 'rel', 'all', each '+logits' to add the head's logits), source ('store', 'all'),
    cov ('lw', 'oas', 'diag'), rank (None: full, k, 0: diagonal), tied ('recognizer': one covariance per
    sub-network, 'task': one per task), classes (True: a mean per class, 'max' over them or a mixture),
    tf (feature transform), fp16 (parameters rounded to float16 and counted at 2 bytes).
    Returns {split: [t][m] -> (n, T - m) log-likelihoods of tasks m..T-1}, bytes.
    """
    T = cache.T
    width = 2 if cfg["fp16"] else 4
    out = {s: [[None] * (T - 1) for _ in range(T)] for s in ("val", "test")}
    nbytes = 0
    for m in range(T - 1):
        cols = columns_of(cache, m, cfg["features"])
        train = {s: transform(feature_block(cache, cfg["features"], cfg["source"], "train", s, m, cols), cfg["tf"])
                 for s in range(m, T)}
        # the store keeps no labels: one mean per task there
        labels = {s: (cache.z[f"all/{s}/labels"] if cfg["source"] == "all" else None) for s in range(m, T)}
        groups = []  # (task, means (c, dim), class log-priors (c,))
        centred = {}
        for s in range(m, T):
            X = train[s]
            if cfg["classes"] and labels[s] is not None:
                cs = np.unique(labels[s])
                means = np.stack([X[labels[s] == c].mean(0) for c in cs])
                prior = np.log(np.array([np.mean(labels[s] == c) for c in cs]))
                centred[s] = X - means[np.searchsorted(cs, labels[s])]
            else:
                means, prior = X.mean(0)[None], np.zeros(1)
                centred[s] = X - means[0]
            groups.append((s, means, prior))
        if cfg["tied"] == "recognizer":
            pooled = np.concatenate(list(centred.values()))
            shared = gaussian_from(pooled, cfg)
        else:
            covs = {s: gaussian_from(centred[s], cfg) for s in range(m, T)}
        task_prior = np.log(np.array([len(train[s]) for s in range(m, T)], float))
        task_prior -= np.log(np.exp(task_prior).sum())
        for _, means, _ in groups:
            nbytes += means.size * width + len(means) * width  # means, class priors
        nbytes += (T - m) * width + len(cols) * UNIT_LIST  # task priors, the unit list
        nbytes += (shared.n_params if cfg["tied"] == "recognizer" else sum(g.n_params for g in covs.values())) * width
        for split in ("val", "test"):
            for t in range(T):
                X = transform(feature_block(cache, cfg["features"], cfg["source"], split, t, m, cols), cfg["tf"])
                ll = []
                for (s, means, prior), lp in zip(groups, task_prior):
                    g = shared if cfg["tied"] == "recognizer" else covs[s]
                    means_s = means.astype(np.float16).astype(np.float64) if cfg["fp16"] else means
                    per_class = g.logpdf(X, means_s)
                    if cfg["agg"] == "max":
                        ll.append(per_class.max(1) + lp)
                    else:
                        ll.append(np.logaddexp.reduce(per_class + prior, 1) + lp)
                out[split][t][m] = np.stack(ll, 1)
    # the newest task's own statistics are kept too, for the recogniser it gets when the next task comes
    m = T - 1
    cols = columns_of(cache, m, cfg["features"])
    X = transform(feature_block(cache, cfg["features"], cfg["source"], "train", m, m, cols), cfg["tf"])
    n_means = len(np.unique(cache.z[f"all/{m}/labels"])) if cfg["classes"] and cfg["source"] == "all" else 1
    nbytes += (n_means * (X.shape[1] + 1) + 1) * width + len(cols) * UNIT_LIST
    nbytes += gaussian_from(X - X.mean(0), cfg).n_params * width
    return out, nbytes


def gaussian_from(centred, cfg):
    cov, _ = shrunk_covariance(centred, "diag" if cfg["rank"] == 0 else cfg["cov"])
    dim = len(cov)
    if cfg["rank"] is None or cfg["rank"] >= dim:  # full covariance (a rank as large as the dimension is full)
        cov = cov + np.eye(dim) * 1e-6 * max(float(np.trace(cov)) / max(dim, 1), 1e-12)
        if cfg["fp16"]:  # what is kept is the Cholesky factor, in float16: the covariance stays positive definite
            L = np.linalg.cholesky(cov).astype(np.float16).astype(np.float64)
            np.fill_diagonal(L, np.maximum(np.diag(L), 2.0 ** -14))
            cov = L @ L.T
        return FullGaussian(np.zeros(dim), cov)
    U, lam, d = low_rank_plus_diagonal(cov, cfg["rank"])
    if cfg["fp16"]:
        U, lam, d = (a.astype(np.float16).astype(np.float64) for a in (U, lam, d))
        d = np.maximum(d, 1e-6 * max(float(d.mean()), 1e-12))
    mean = np.zeros(len(d))
    return LowRankGaussian(mean, U, lam, d)


def posterior_pt(ll, T, tau, combine="chain"):
    """P_T of one task's images from recogniser log-likelihoods ``ll[m]`` (n, T - m), temperature ``tau``.

    chain: P_R(m) = softmax over tasks m..T-1 of ll / tau, at m (the likelihood ratio of task m against the
    later tasks), then the package's chain. argmax (TPL-style): score_m = log-ratio / tau, the newest task
    scores 0, argmax (returned as one-hot P_T).
    """
    if combine == "chain":
        p_r = np.stack([softmax(ll[m] / tau)[:, 0] for m in range(T - 1)], 1)
        return chain(p_r)
    ratio = np.stack([(ll[m][:, 0] - np.logaddexp.reduce(ll[m][:, 1:], 1)) / tau for m in range(T - 1)]
                     + [np.zeros(len(ll[0]))], 1)
    return np.eye(T)[ratio.argmax(1)]


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


# ------------------------------------------------------------------------ energy / max logit
def logit_scores(cache, split, t, m, kind):
    lg = cache.logits(split, t, m)[:, : head_size(cache, m)]
    if kind == "energy":
        return np.logaddexp.reduce(lg, 1)
    return lg.max(1)


def logit_variant(cache, kind, fit="val"):
    """P_R(m) = sigmoid(a_m s_m + b_m), s the energy or max logit of sub-network m; the chain.

    fit 'val': logistic fit on validation rows of tasks >= m through sub-network m (4 parameters in all per
    recogniser, but fitted on validation images: its validation numbers are optimistic). fit 'train': 1-D Gaussians
    of the score per task, from all training images (the statistics a store could keep).
    """
    from sklearn.linear_model import LogisticRegression

    T = cache.T
    p = {}
    nbytes = 0
    for m in range(T - 1):
        if fit == "val":
            s = np.concatenate([logit_scores(cache, "val", t, m, kind) for t in range(m, T)])
            y = np.concatenate([np.full(cache.n("val", t), int(t == m)) for t in range(m, T)])
            model = LogisticRegression(class_weight="balanced").fit(s[:, None], y)
            p[m] = lambda split, t, m=m, model=model: model.predict_proba(logit_scores(cache, split, t, m, kind)[:, None])[:, 1]
            nbytes += 2 * 4
        else:
            stats = []
            for s_ in range(m, T):
                lg = cache.z[f"all/{s_}/{m}/logits"][:, : head_size(cache, m)]
                v = np.logaddexp.reduce(lg, 1) if kind == "energy" else lg.max(1)
                stats.append((v.mean(), v.std() + 1e-6, len(v)))
            nbytes += 3 * 4 * len(stats)

            def prob(split, t, m=m, stats=stats):
                v = logit_scores(cache, split, t, m, kind)
                ll = np.stack([-0.5 * ((v - mu) / sd) ** 2 - np.log(sd) + np.log(n) for mu, sd, n in stats], 1)
                return softmax(ll)[:, 0]
            p[m] = prob
    return {split: [chain(np.stack([p[m](split, t) for m in range(T - 1)], 1)) for t in range(T)]
            for split in ("val", "test")}, nbytes


# =================================================================================== the sweep
TAUS = (1, 2, 4, 8, 16, 32, 64)


def gaussian_grid(quick):
    """The Gaussian structures swept (the temperature and the combination are swept per structure)."""
    grid = []
    for features, source in (("act", "all"), ("act+logits", "all"), ("act", "store"), ("rel", "store"),
                             ("all", "store")):
        combos = ((("recognizer", "mix", True), ("recognizer", "max", True), ("task", "mix", False),
                   ("recognizer", "mix", False)) if source == "all"  # the store keeps no class labels
                  else (("recognizer", "mix", False), ("task", "mix", False)))
        for cov, rank in (("lw", None), ("oas", None), ("lw", 128), ("lw", 64), ("lw", 32), ("lw", 16), ("lw", 4),
                          ("lw", 0)):
            for (tied, agg, classes), tf in itertools.product(
                    combos, ("sqrt", "none") if (features, source) == ("act", "all") else ("sqrt",)):
                grid.append({"features": features, "source": source, "cov": cov, "rank": rank, "tied": tied,
                             "agg": agg, "classes": classes, "tf": tf, "fp16": False})
    if quick:
        grid = grid[::9]
    return grid


def label(cfg):
    rank = "full" if cfg["rank"] is None else "diag" if cfg["rank"] == 0 else f"rank {cfg['rank']}+diag"
    cls = ("per class, " + ("max (Mahalanobis)" if cfg["agg"] == "max" else "mixture")) if cfg["classes"] else "per task"
    return (f"{cfg['features']} from {cfg['source']} rows, {cfg['cov'].upper() if cfg['rank'] != 0 else 'var'} {rank}, "
            f"tied per {cfg['tied']}, {cls}, tf {cfg['tf']}" + (", fp16" if cfg["fp16"] else ""))


def run_all(caches, quick):
    """Every variant on every seed: val and test recognition / TAg, bytes. Returns a list of result dicts."""
    results = []

    def add(family, name, config, per_seed, bytes_, extra=None):
        entry = {"family": family, "name": name, "config": config, "bytes": int(np.mean(bytes_)),
                 "exemplars": float(np.mean(bytes_)) / IMAGE_BYTES, "seeds": [c.meta["seed"] for c in caches]}
        for split in ("val", "test"):
            for key in ("recognition", "tag"):
                v = [r[split][key] for r in per_seed]
                entry[f"{split}_{key}"] = float(np.mean(v))
                entry[f"{split}_{key}_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
                entry[f"{split}_{key}_seeds"] = v
            entry[f"{split}_recognition_per_task"] = np.mean([r[split]["per_task"] for r in per_seed], 0).tolist()
        entry.update(extra or {})
        results.append(entry)
        print(f"{family:<10} {name:<70} {entry['bytes']:>11,} B  val {entry['val_recognition']:5.1f}/"
              f"{entry['val_tag']:5.1f}  test {entry['test_recognition']:5.1f}/{entry['test_tag']:5.1f}", flush=True)
        return entry

    # the package as it ran (its own fitted forests), and the store bytes it reported
    per = [{s: score(c, s, [c.z[f"{s}/{t}/p_package"] for t in range(c.T)]) for s in ("val", "test")} for c in caches]
    add("package", "package forests (as fitted in the run)", {}, per,
        [sum(r.nbytes for k, r in c.z.items() if k.startswith("store/")) for c in caches],
        {"stored_bytes_reported": [int(sum(c.meta["stored_bytes"])) for c in caches]})
    # (a) forests on rows
    forest_grid = [("2048 rows, 40 rel + acts", {})]
    rows_list = (1024, 512, 256, 128, 64) if not quick else (64,)
    forest_grid += [(f"{n} rows, 40 rel + acts", {"n_rows": n}) for n in rows_list]
    forest_grid += [("2048 rows, 20 rel + acts", {"k_rel": 20}), ("2048 rows, 10 rel + acts", {"k_rel": 10}),
                    ("2048 rows, acts only", {"k_rel": 0}), ("2048 rows, 40 rel only", {"acts": False}),
                    ("2048 rows, 40 rel + acts, float16", {"float16": True})]
    forest_grid += [(f"{n} rows, 40 rel + acts, float16", {"n_rows": n, "float16": True}) for n in rows_list]
    forest_grid += [(f"{n} rows, 10 rel only, float16", {"n_rows": n, "float16": True, "k_rel": 10, "acts": False})
                    for n in (2048, 512, 128) if not quick]
    for name, kw in forest_grid:
        per, nb, nodes = [], [], []
        for c in caches:
            p, b, k = forest_variant(c, **kw)
            per.append({s: score(c, s, p[s]) for s in ("val", "test")})
            nb.append(b)
            nodes.append(k)
        add("forest", name, kw, per, nb, {"forest_nodes": nodes})
    # energy / max logit
    for kind, fit in itertools.product(("energy", "maxlogit"), ("val", "train")):
        per, nb = [], []
        for c in caches:
            p, b = logit_variant(c, kind, fit)
            per.append({s: score(c, s, p[s]) for s in ("val", "test")})
            nb.append(b)
        add("logit", f"{kind}, calibrated on {'validation (fit)' if fit == 'val' else 'training statistics'}",
            {"kind": kind, "fit": fit}, per, nb)
    # (c) Gaussians: every structure, every temperature, chain and argmax; fp16 for the best under budget
    grid = gaussian_grid(quick)
    clock = time.perf_counter()
    for i, cfg in enumerate(grid):
        gaussian_family(caches, cfg, add, quick)
        if i % 10 == 9:
            print(f"  ({i + 1}/{len(grid)} Gaussian structures, {time.perf_counter() - clock:.0f} s)", flush=True)
    done, fp32 = [], [r for r in results if not r["config"].get("fp16")]
    full = [r for r in fp32 if r["family"] == "gaussian" and r["config"]["rank"] is None]
    for pool, under in ((fp32, None), (fp32, BUDGET), (fp32, BUDGET // 4), (full, None)):
        best = best_of(pool, "gaussian", under)
        if best is not None and best["config"] not in done:
            done.append(best["config"])
            cfg = dict(best["config"], fp16=True)
            gaussian_family(caches, {k: v for k, v in cfg.items() if k not in ("tau", "combine")}, add, quick,
                            only=(cfg["tau"], cfg["combine"]))
    return results


def gaussian_family(caches, cfg, add, quick, only=None):
    lls = [gaussian_loglik(c, cfg) for c in caches]
    for tau, combine in itertools.product(TAUS if not quick else (1, 8), ("chain", "argmax")):
        if only is not None and (tau, combine) != only:
            continue
        per = []
        for c, (ll, _) in zip(caches, lls):
            per.append({s: score(c, s, [posterior_pt(ll[s][t], c.T, tau, combine) for t in range(c.T)])
                        for s in ("val", "test")})
        add("gaussian", f"{label(cfg)}, tau {tau}, {combine}", dict(cfg, tau=tau, combine=combine), per,
            [b for _, b in lls])


def best_of(results, family, under=None, key="val_tag"):
    pool = [r for r in results if r["family"] == family and (under is None or r["bytes"] <= under)]
    return max(pool, key=lambda r: (r[key], -r["bytes"])) if pool else None


def frontier(results, family, key="val_tag"):
    """Variants of a family no other of it beats on validation with fewer or equal bytes (chosen on validation)."""
    pool = sorted((r for r in results if r["family"] == family), key=lambda r: (r["bytes"], -r[key]))
    out, best = [], -1.0
    for r in pool:
        if r[key] > best:
            out.append(r)
            best = r[key]
    return out


def plot(results, path):
    import plotly.graph_objects as go

    fig = go.Figure()
    styles = {"forest": ("forests on rows (a)", "circle"), "gaussian": ("Gaussians on statistics (c)", "diamond"),
              "logit": ("energy / max logit", "square"), "package": ("package as run", "star")}
    for family, (name, symbol) in styles.items():
        pts = frontier(results, family) if family == "gaussian" else [r for r in results if r["family"] == family]
        pts = sorted(pts, key=lambda r: r["bytes"])
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[max(r["bytes"], 1) for r in pts], y=[r["test_tag"] for r in pts],
            error_y={"type": "data", "array": [r["test_tag_sd"] for r in pts]},
            mode="lines+markers" if family == "gaussian" else "markers", marker={"symbol": symbol, "size": 9},
            name=name + (" (validation frontier)" if family == "gaussian" else ""),
            text=[f"{r['name']}<br>{r['bytes']:,} B = {r['exemplars']:.0f} exemplars<br>recognition "
                  f"{r['test_recognition']:.1f} %" for r in pts], hoverinfo="text+y"))
    ref = [(BUDGET, 71.06, "replay 20/class, ours (issue 28)"), (BUDGET, 77.7, "replay 20/class, Avalanche (issue 28)")]
    fig.add_trace(go.Scatter(x=[r[0] for r in ref], y=[r[1] for r in ref], mode="markers+text",
                             marker={"symbol": "x", "size": 11, "color": "black"}, text=[r[2] for r in ref],
                             textposition="middle left", name="replay at 376,320 B (reported, not rerun)"))
    fig.add_hline(y=TARGETS["tag"], line_dash="dot", annotation_text="TAg target 92 %")
    fig.add_vline(x=BUDGET, line_dash="dot", annotation_text="376,320 B = 160 exemplars",
                  annotation_position="bottom left")
    xs = [max(r["bytes"], 1) for r in results]
    lo, hi = np.log10(max(min(xs), 10)) - 0.2, np.log10(max(xs)) + 0.2
    fig.update_layout(
        title="BloodMNIST 4 x 2: TAg (test, mean ± sd over seeds) against the recognition store's bytes",
        xaxis={"type": "log", "title": "stored bytes (recogniser parameters or rows)", "range": [lo, hi]},
        xaxis2={"type": "log", "overlaying": "x", "side": "top", "title": "replay exemplars the same bytes buy (28x28x3 uint8)",
                "range": [lo - np.log10(IMAGE_BYTES), hi - np.log10(IMAGE_BYTES)],
                "tickvals": [0.01, 0.1, 1, 10, 100, 1000, 10000], "ticktext": ["0.01", "0.1", "1", "10", "100", "1,000",
                                                                            "10,000"], "showgrid": False},
        yaxis={"title": "TAg % (test)"}, width=1100, height=650, legend={"x": 0.01, "y": 0.99})
    fig.add_trace(go.Scatter(x=[10 ** (lo - np.log10(IMAGE_BYTES))], y=[None], xaxis="x2", showlegend=False))
    fig.write_html(path, include_plotlyjs="cdn")
    png = Path(str(path).replace(".html", ".png"))
    try:
        fig.write_image(str(png))
    except (ImportError, RuntimeError, ValueError) as error:  # kaleido is not installed here
        if not screenshot(fig, png):
            print(f"no PNG ({type(error).__name__}); wrote {path}", flush=True)


def screenshot(fig, png):
    """The figure as PNG through a headless Chromium (playwright), where kaleido is missing; False if neither."""
    import shutil
    import tempfile

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    if browser is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "figure.html"
        fig.write_html(page_file, include_plotlyjs=True, full_html=True)  # plotly.js inlined: no network
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
            page = b.new_page(viewport={"width": 1100, "height": 650})
            page.goto(page_file.as_uri())
            page.wait_for_timeout(1500)
            page.screenshot(path=str(png))
            b.close()
    return True


def summary(results):
    """The table: one line per family choice, chosen on validation."""
    picks = [("package", best_of(results, "package"))]
    for r in results:
        if r["family"] == "forest":
            picks.append(("forest", r))
    for r in results:
        if r["family"] == "logit":
            picks.append(("logit", r))
    g = [r for r in results if r["family"] == "gaussian" and not r["config"].get("fp16")]
    both = [r for r in results if r["family"] == "gaussian"]
    groups = {
        "best Gaussian (any bytes)": g,
        "best Gaussian <= 376,320 B (float32 or float16)": [r for r in both if r["bytes"] <= BUDGET],
        "best Gaussian <= 94,080 B (a quarter)": [r for r in both if r["bytes"] <= BUDGET // 4],
        "best full covariance": [r for r in g if r["config"]["rank"] is None],
        "best low rank + diagonal": [r for r in g if r["config"]["rank"] not in (None, 0)],
        "best diagonal": [r for r in g if r["config"]["rank"] == 0],
        "best Mahalanobis (Lee: tied, max over classes)": [r for r in g if r["config"]["agg"] == "max"],
        "best TPL-style argmax of log-ratios": [r for r in g if r["config"]["combine"] == "argmax"],
        "best on stored rows (store, no labels)": [r for r in g if r["config"]["source"] == "store"],
        "best with relevance features": [r for r in g if r["config"]["features"] in ("rel", "all")],
        "best activations only, all training images": [r for r in g if r["config"]["source"] == "all"],
        "float16 parameters (best config)": [r for r in results if r["family"] == "gaussian" and r["config"].get("fp16")],
        "float16 full covariance (exactly updatable)": [r for r in results if r["family"] == "gaussian"
                                                        and r["config"].get("fp16") and r["config"]["rank"] is None],
    }
    for name, pool in groups.items():
        if pool:
            best = max(pool, key=lambda r: (r["val_tag"], -r["bytes"]))
            picks.append((name, best))
    return picks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--quick", action="store_true", help="tiny training and sweep (a smoke run)")
    parser.add_argument("--steps", default="extract,evaluate")
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "recognition_frontier"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cache_dir = Path(args.cache)
    if cache_dir.resolve().is_relative_to(ROOT):
        parser.error("the cache holds per-image records of real images: keep it outside the repository")
    paths = {s: cache_dir / f"seed{s}{'-quick' if args.quick else ''}.npz" for s in seeds}
    if "extract" in args.steps:
        for s in seeds:
            if not paths[s].exists():
                extract(s, paths[s], args.quick)
    if "evaluate" in args.steps:
        os.environ.setdefault("LOKY_MAX_CPU_COUNT", os.environ.get("OMP_NUM_THREADS", "1"))  # forests: n_jobs=-1
        caches = [Cache(paths[s]) for s in seeds if paths[s].exists()]
        out = Path(args.out + ("-quick" if args.quick else ""))
        out.mkdir(parents=True, exist_ok=True)
        clock = time.perf_counter()
        results = run_all(caches, args.quick)
        (out / "results.json").write_text(json.dumps(
            {"seeds": [c.meta["seed"] for c in caches], "targets": TARGETS, "image_bytes": IMAGE_BYTES,
             "runs": [c.meta for c in caches], "results": results,
             "evaluate_seconds": time.perf_counter() - clock}, indent=1, default=float))
    if "evaluate" in args.steps or "table" in args.steps:  # 'table': the table and plot again from results.json
        out = Path(args.out + ("-quick" if args.quick else ""))
        saved = json.loads((out / "results.json").read_text())
        results = saved["results"]
        picks = summary(results)
        saved["table"] = [{"pick": p, **r} for p, r in picks]
        (out / "results.json").write_text(json.dumps(saved, indent=1, default=float))
        plot(results, out / "frontier.html")
        lines = ["| pick | variant | bytes | replay exemplars | recognition % (test) | TAg % (test) | val recognition / TAg |",
                 "|---|---|---:|---:|---|---|---|"]
        for p, r in picks:
            lines.append(f"| {p} | {r['name']} | {r['bytes']:,} | {r['exemplars']:.0f} | {r['test_recognition']:.2f} ± "
                         f"{r['test_recognition_sd']:.2f} | {r['test_tag']:.2f} ± {r['test_tag_sd']:.2f} | "
                         f"{r['val_recognition']:.2f} / {r['val_tag']:.2f} |")
        (out / "table.md").write_text("\n".join(lines) + "\n")
        print("\n" + "\n".join(lines))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
