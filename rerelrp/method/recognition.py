"""Which task does an image belong to? Relevance features, per-task recognisers, the chain.

Instead of replaying images, every task leaves behind the relevance patterns its samples
produce in each sub-network (the relevance data set D_R), restricted to the few units each
recogniser reads, together with the activations of the units the sub-network keeps (read in the
same forward pass; they raised task recognition on one data set by 3-5 points, see
docs/method-notes.md). Recogniser m tells "task m" (in-distribution) from "a later task" (out of
distribution) and is refitted whenever a new task adds out-of-distribution rows.
"""
from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from rerelrp.method.scope import MOMENTS, N_STATISTICS, ScopeReference, scope_scores, threshold
from rerelrp.model.units import layer_starts, unit_pairs


def select_features(id_rows, n_features):
    """The units with the largest mean relevance magnitude on a task's own samples."""
    score = np.abs(id_rows).mean(0)
    n = min(n_features, int((score > 0).sum()) or 1)
    return np.sort(np.argsort(-score, kind="stable")[:n]).astype(np.int64)


class RelevanceStore:
    """The replay-free memory: the units each recogniser reads and the feature rows kept for it.

    A recogniser reads two things about an image in its sub-network: the relevance of a few
    selected units (``features[m]``) and the activation of every unit the sub-network keeps
    (``active[m]``; empty when activation features are off). Both list (layer number, unit)
    pairs, which stay valid when a layer grows (new units are appended). Signals arrive as one
    (n, 2 * units) array per sub-network, relevance first, then activations (:func:`signals`).
    ``rows[m][t]`` holds rows of task ``t``'s samples read through sub-network ``m``, only the
    columns recogniser ``m`` uses; ``t == m`` rows are in-distribution, ``t > m`` rows are not.
    """

    def __init__(self):
        self.features = []  # per recogniser m: int32 (k, 2) of (layer number, unit), relevance
        self.active = []  # per m: int32 (a, 2), activations
        self.rows = []  # per m: {t: float32 (n, k + a)}
        self.scope = []  # per m: float32 (n_val,) scope distances of task m's validation images (rerelrp.method.scope)
        self.scope_stats = []  # per m: float32 (n, 9) input statistics of the images behind rows[m][m] (or 7: older)
        self._searches = {}  # m -> (rows[m][m], scope_stats[m], their ScopeReference): derived, never saved

    def columns(self, m, layer_sizes):
        """Recogniser m's columns in a :func:`signals` array of a network with these layer sizes."""
        starts, total = layer_starts(layer_sizes), sum(layer_sizes.values())
        rel, act = self.features[m], self.active[m]
        return np.concatenate([starts[rel[:, 0]] + rel[:, 1], total + starts[act[:, 0]] + act[:, 1]])

    def activation_columns(self, m, layer_sizes):
        """The columns of :meth:`columns` that hold activations (what the scope check compares)."""
        return self.columns(m, layer_sizes)[len(self.features[m]):]

    def scope_reference(self, m):
        """Task m's own training rows for the scope check: activations of its kept units, input statistics."""
        return np.concatenate([self.rows[m][m][:, len(self.features[m]):], self.scope_stats[m]], 1)

    def scope_search(self, m):
        """Task m's :class:`~rerelrp.method.scope.ScopeReference`, made once for the arrays it is made of
        (they are never changed in place, only replaced when a learner is restored)."""
        own, stats = self.rows[m][m], self.scope_stats[m]
        cached = self._searches.get(m)
        if cached is None or cached[0] is not own or cached[1] is not stats:
            cached = self._searches[m] = (own, stats, ScopeReference(self.scope_reference(m), stats.shape[1]))
        return cached[2]

    def n_columns(self, m):
        return len(self.features[m]) + len(self.active[m])

    def add_task(self, m, id_signals, n_features, layer_sizes, kept_flat=None):
        """Start recogniser m from task m's own signals; it reads the activations of ``kept_flat`` units."""
        starts, total = layer_starts(layer_sizes), sum(layer_sizes.values())
        self.features.append(unit_pairs(select_features(id_signals[:, :total], n_features), starts))
        self.active.append(unit_pairs(np.flatnonzero(kept_flat) if kept_flat is not None else [], starts))
        self.rows.append({m: id_signals[:, self.columns(m, layer_sizes)].astype(np.float32)})

    def add_ood(self, m, t, signals_m, layer_sizes):
        self.rows[m][t] = signals_m[:, self.columns(m, layer_sizes)].astype(np.float32)

    def training_set(self, m):
        """All rows of recogniser m with labels 1 (task m) and 0 (later tasks)."""
        parts = self.rows[m]
        X = np.concatenate([parts[t] for t in sorted(parts)])
        y = np.concatenate([np.full(len(parts[t]), int(t == m), np.int64) for t in sorted(parts)])
        return X, y

    def nbytes_of_task(self, t):
        """Bytes kept because of task t: its rows in every recogniser plus its unit lists."""
        rows = sum(r[t].nbytes for r in self.rows if t in r)
        own = self.features[t].nbytes + self.active[t].nbytes if t < len(self.features) else 0
        return rows + own + (self.scope[t].nbytes + self.scope_stats[t].nbytes if t < len(self.scope) else 0)

    @property
    def n_rows(self):
        """Feature rows kept in all (a privacy statement counts them)."""
        return sum(len(block) for rows in self.rows for block in rows.values())

    def to_arrays(self):
        """Every array of the store by name (for saving)."""
        out = {f"features/{m}": f for m, f in enumerate(self.features)}
        out.update({f"active/{m}": a for m, a in enumerate(self.active)})
        out.update({f"rows/{m}/{t}": block for m, rows in enumerate(self.rows) for t, block in rows.items()})
        out.update({f"scope/{m}": d for m, d in enumerate(self.scope)})
        out.update({f"scope_stats/{m}": d for m, d in enumerate(self.scope_stats)})
        return out

    @classmethod
    def from_arrays(cls, arrays, n_tasks, layer_sizes):
        """The store saved by :meth:`to_arrays`; raises ValueError naming the first array that does not fit."""
        store, sizes = cls(), np.asarray(list(layer_sizes.values()))
        for m in range(n_tasks):
            for name, allow_empty in ((f"features/{m}", False), (f"active/{m}", True)):
                f = arrays.get(name)
                if f is None or f.dtype != np.int32 or f.ndim != 2 or f.shape[1] != 2 or (len(f) == 0 and not allow_empty):
                    raise ValueError(f"{name} is missing or not a list of (layer, unit) pairs")
                if len(f) and (f[:, 0].min() < 0 or f[:, 0].max() >= len(sizes) or f[:, 1].min() < 0
                               or np.any(f[:, 1] >= sizes[f[:, 0]])):
                    raise ValueError(f"{name} points outside the network's layers")
            store.features.append(arrays[f"features/{m}"].copy())
            store.active.append(arrays[f"active/{m}"].copy())
            width, rows = store.n_columns(m), {}
            for t in range(m, n_tasks):
                block = arrays.get(f"rows/{m}/{t}")
                if block is None:
                    continue
                if block.dtype != np.float32 or block.ndim != 2 or block.shape[1] != width:
                    raise ValueError(f"rows/{m}/{t} is {block.dtype} {block.shape}, expected float32 (n, {width})")
                rows[t] = block.copy()
            if m not in rows:
                raise ValueError(f"rows/{m}/{m} (task {m}'s own rows) is missing")
            store.rows.append(rows)
            scope = arrays.get(f"scope/{m}", np.zeros(0, np.float32))  # absent in workspaces saved before the scope check
            stats = arrays.get(f"scope_stats/{m}", np.zeros((0, N_STATISTICS), np.float32))
            if scope.dtype != np.float32 or scope.ndim != 1:
                raise ValueError(f"scope/{m} is {scope.dtype} {scope.shape}, expected float32 (n,)")
            width_ok = stats.shape[1:] in ((MOMENTS,), (N_STATISTICS,))  # MOMENTS: saved before the layout statistics
            if stats.dtype != np.float32 or not width_ok or (len(scope) and len(stats) != len(rows[m])):
                raise ValueError(f"scope_stats/{m} is {stats.dtype} {stats.shape}, "
                                 f"expected float32 ({len(rows[m])}, {N_STATISTICS}) or ({len(rows[m])}, {MOMENTS})")
            store.scope.append(scope.copy())
            store.scope_stats.append(stats.copy())
        extra = set(arrays) - set(store.to_arrays())
        if extra:
            raise ValueError(f"unexpected arrays: {', '.join(sorted(extra)[:5])}")
        return store


class ForestRecognition:
    """The paper's recognisers: forests on the store's relevance and activation rows, the scope check on its rows."""

    needs_relevance = True

    def __init__(self, store, forests):
        self.store, self.forests = store, forests

    def p_task(self, units, layer_sizes):
        """P_T (N, T) for (N, T, 2U) unit signals through each sub-network (the chain of the forests' P_R)."""
        p_r = np.stack([in_task_probability(forest, units[:, m, self.store.columns(m, layer_sizes)])
                        for m, forest in enumerate(self.forests)], 1) if self.forests else np.zeros((len(units), 0))
        return chain_probabilities(p_r)

    def scope_score(self, units, stats, rate, layer_sizes):
        """Out-of-scope scores (N,) (see :mod:`rerelrp.method.scope`); NaN when no task has scope data (a
        workspace saved before the scope check existed)."""
        store, distances, thresholds = self.store, [], []
        for m in range(len(store.features)):
            if len(store.scope[m]):
                width = store.scope_stats[m].shape[1]  # 7: a task saved before the layout statistics
                rows = np.concatenate([units[:, m, store.activation_columns(m, layer_sizes)], stats[:, :width]], 1)
                distances.append(store.scope_search(m).distance(rows))
                thresholds.append(threshold(store.scope[m], rate))
        return scope_scores(np.stack(distances, 1), thresholds) if distances else np.full(len(units), np.nan)


def signals(result):
    """One row per sample of an :class:`~rerelrp.lrp.relevance.LrpResult`: unit relevance, then unit activations."""
    return np.concatenate([result.units.numpy(), result.activations.numpy()], axis=-1)


def fit_recognizer(X, y, n_trees=100, seed=0):
    """The authors' forest settings but leaves of one row, with class weights balanced over all rows.

    Leaves of one row recognised better on validation rows (BloodMNIST 4x2: 87.6 % against 87.0 %
    with leaves of 5; digits: equal), see docs/method-notes.md.
    """
    forest = RandomForestClassifier(
        n_estimators=n_trees,
        max_depth=40,
        min_samples_leaf=1,
        criterion="log_loss",
        max_features="log2",
        bootstrap=False,
        class_weight="balanced",
        random_state=seed % 2**32,  # any derived seed; sklearn takes 0..2**32-1
        n_jobs=-1,
    )
    forest.fit(X, y)
    return forest


def forest_proba(forest, X):
    """``forest.predict_proba(X)``, bit for bit, without joblib's per-tree dispatch.

    sklearn hands every tree to joblib, which for one image costs more than the network (about
    50 ms per 300-tree forest here). Each tree's own compiled ``tree_.predict`` gives the same leaf
    fractions; they are summed in tree order (sklearn's order with one job; with several jobs
    sklearn sums in thread order, so only this path is deterministic to the last bit).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    out = np.zeros((len(X), len(forest.classes_)))
    for estimator in forest.estimators_:
        out += estimator.tree_.predict(X)[:, : len(forest.classes_)]
    return out / len(forest.estimators_)


def in_task_probability(forest, X):
    """P(sample belongs to the recogniser's own task) for a batch of feature rows."""
    classes = list(forest.classes_)
    if 1 not in classes:
        return np.zeros(len(X))
    return forest_proba(forest, X)[:, classes.index(1)]


def chain_probabilities(p_recognised):
    """P_T from the recognisers' P_R: P_T(k) = P_R(k) * prod_{j<k} (1 - P_R(j)); the last task takes the rest.

    ``p_recognised`` is (N, T-1), one column per task but the newest; returns (N, T).
    """
    n, r = p_recognised.shape
    out = np.empty((n, r + 1))
    remaining = np.ones(n)
    for k in range(r):
        out[:, k] = p_recognised[:, k] * remaining
        remaining = remaining * (1.0 - p_recognised[:, k])
    out[:, r] = remaining
    return out
