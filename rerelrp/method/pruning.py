"""Keep only what a task needs: relevance-ranked dropping under an accuracy-drop budget.

Units are ranked once by the size of their relevance (least relevant first) and the cut is
found by binary search on validation accuracy: about log2(units) validation passes, where the
published code walked a 10,000-bin histogram with one pass and one model copy per bin.

A second search then frees more units in layers whose free share would fall below ``min_free``
(their least relevant kept free units, ranked together), but only as far as the same budget allows:
a task's accuracy is never traded for capacity. Whatever shortfall remains is reported; the learner may
make room by fine-tuning (:mod:`rerelrp.method.room`) and grows the layers still short.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PruneResult:
    kept: np.ndarray  # bool, flat over all unit layers
    base_acc: float  # accuracy of the unpruned network on the images judged, %
    kept_acc: float  # accuracy of the kept sub-network on them, %
    threshold: float  # lowest accuracy the search accepted, %
    tolerance: float  # accuracy points allowed to be lost
    evaluations: int  # validation passes the search ran
    n_images: int  # images each pass judged
    shortfall: dict = field(default_factory=dict)  # layer -> free units missing to reach min_free
    room: dict | None = None  # what making room did (rerelrp.method.room), if it was tried


def largest_within(lo, hi, accept):
    """Largest n in [lo, hi] with accept(n), assuming accept(lo) holds and acceptance is monotone."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if accept(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def search_cut(scores, frozen, slices, evaluate, acc_drop, n_val, min_free, on_step=None):
    """Drop as many low-relevance units as the budget allows; returns a :class:`PruneResult`.

    ``evaluate(kept)`` returns validation accuracy (%) of the sub-network keeping ``kept``.
    Every layer keeps its most relevant unit: a sub-network with an empty layer is dead.
    """
    scores = np.asarray(scores, float)
    n_units = len(scores)
    protected = most_relevant(scores, slices)
    order = np.flatnonzero(~protected)
    order = order[np.argsort(scores[order], kind="stable")]
    # a share of the images judged: on fewer than 100 / acc_drop images no image may be lost
    tol = float(acc_drop)
    evaluations = 0
    accuracy = {}

    def acc_of(kept):
        nonlocal evaluations
        key = kept.tobytes()
        if key not in accuracy:
            evaluations += 1
            accuracy[key] = evaluate(kept)
            if on_step:
                on_step(evaluations, int((~kept).sum()), accuracy[key])
        return accuracy[key]

    def dropping(units):
        kept = np.ones(n_units, bool) if base_kept is None else base_kept.copy()
        kept[units] = False
        return kept

    base_kept = None
    base = acc_of(np.ones(n_units, bool))
    threshold = base - tol
    n_cut = largest_within(0, len(order), lambda n: acc_of(dropping(order[:n])) >= threshold)
    base_kept = dropping(order[:n_cut])

    # second stage: free more units in layers short of min_free, least relevant first, same budget
    extra = shortfall_units(base_kept, scores, frozen, protected, slices, min_free)
    n_extra = largest_within(0, len(extra), lambda k: acc_of(dropping(extra[:k])) >= threshold)
    base_kept = dropping(extra[:n_extra])
    shortfall = shortfall_of(base_kept, frozen, slices, min_free)
    return PruneResult(base_kept, base, acc_of(base_kept), threshold, tol, evaluations, n_val, shortfall)


def most_relevant(scores, slices):
    """Flat mask of each layer's most relevant unit, which every cut keeps."""
    protected = np.zeros(len(scores), bool)
    for sl in slices.values():
        protected[sl.start + int(np.argmax(scores[sl]))] = True
    return protected


def shortfall_units(kept, scores, frozen, protected, slices, min_free):
    """The units to drop so that every layer reaches ``min_free``: per short layer its least relevant kept
    free units (never a protected one), all of them ranked together, least relevant first."""
    units = []
    for sl in slices.values():
        idx = np.arange(sl.start, sl.stop)
        need = math.ceil(min_free * len(idx)) - int((~frozen[idx] & ~kept[idx]).sum())
        if need > 0:
            candidates = idx[kept[idx] & ~frozen[idx] & ~protected[idx]]
            units.extend(candidates[np.argsort(scores[candidates], kind="stable")][:need])
    units = np.asarray(units, dtype=np.int64)
    return units[np.argsort(scores[units], kind="stable")]


def shortfall_of(kept, frozen, slices, min_free):
    """Per layer, the free units missing to reach ``min_free`` if ``kept`` is frozen (layers short only)."""
    shortfall = {}
    for name, sl in slices.items():
        idx = np.arange(sl.start, sl.stop)
        missing = math.ceil(min_free * len(idx)) - int((~frozen[idx] & ~kept[idx]).sum())
        if missing > 0:
            shortfall[name] = missing
    return shortfall
