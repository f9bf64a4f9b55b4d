"""Which task does an image belong to, from statistics rather than rows: class-conditional Gaussians.

Recogniser m works in sub-network m's feature space: the square roots of the activations of the units
task m keeps (a forward pass gives them; no LRP). For every task s >= m it keeps the per-class means and
counts of task s's training images there (s's images pass through the frozen sub-network m when s is
learned; earlier tasks never reach it), and one within-class covariance pooled over all of them.
P_R(m) = softmax over s >= m of (log sum_c n_sc N(z; mu_sc, Sigma_m)) / tau, at s = m: the likelihood
ratio of task m against the later tasks (TPL, Lin et al., ICLR 2024), with a mixture over classes and
the covariance shrunk by OAS (Chen et al., 2010); then the chain. The covariance is kept as the float16
lower triangle of its Cholesky factor: pooling is additive, so a later task's images only add their
scatter to it. Nothing per image is kept (docs/method-notes.md: the frontier).

The scope check of this store needs no rows either: task m's own images in sub-network m give per-class
means of the features and of the nine input statistics, the features' within-class variances and the
statistics' within-class covariance (OAS-shrunk), fixed when m is learned; an image's distance is the
smallest over classes of the scaled (features) and Mahalanobis (statistics) distance, the two counting
as equal blocks (as :class:`~rerelrp.method.scope.ScopeReference` weighs them). Task m's validation
distances are kept as quantiles, so the rate can change after training.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from sklearn.covariance import shrunk_covariance

from rerelrp.method.recognition import chain_probabilities
from rerelrp.method.scope import N_STATISTICS, scope_scores
from rerelrp.model.units import layer_starts, unit_pairs

TEMPERATURE = 8.0  # of the softmax over tasks; chosen on validation images (1-16 within 1.1 points there)
QUANTILES = np.linspace(0.0, 1.0, 201)  # the validation scope distances kept, as these quantiles
FLOOR = 1e-6  # variances below this share of the mean variance are raised to it (units that barely fire)


def features(acts):
    """The recognisers' features: signed square roots of unit activations (Gaussians fit them better)."""
    acts = np.asarray(acts, np.float64)
    return np.sign(acts) * np.sqrt(np.abs(acts))


class ClassMoments:
    """Per-class counts and sums and the second moment of rows, added batch by batch (the rows are not kept)."""

    def __init__(self, n_classes, d):
        self.counts = np.zeros(n_classes, np.int64)
        self.sums, self.second = np.zeros((n_classes, d)), np.zeros((d, d))

    def add(self, z, labels):
        z, labels = np.asarray(z, np.float64), np.asarray(labels, np.int64)
        self.counts += np.bincount(labels, minlength=len(self.counts))
        np.add.at(self.sums, labels, z)
        self.second += z.T @ z

    @property
    def means(self):
        return self.sums / np.maximum(self.counts, 1)[:, None]

    @property
    def scatter(self):
        """The within-class scatter: sum over classes of (z - mean_c)(z - mean_c)^T."""
        return self.second - (self.sums.T / np.maximum(self.counts, 1)) @ self.sums


def oas(cov, n):
    """OAS-shrunk covariance of an empirical covariance of n rows.

    sklearn's :class:`~sklearn.covariance.OAS` (and ``oas``) needs the rows, which are not kept; this is
    its shrinkage formula on the covariance alone, then sklearn's ``shrunk_covariance``.
    """
    d = len(cov)
    mu = np.trace(cov) / d
    alpha = np.mean(cov ** 2)
    den = (n + 1) * (alpha - mu ** 2 / d)
    shrinkage = 1.0 if den <= 0 else min((alpha + mu ** 2) / den, 1.0)
    return shrunk_covariance(cov, shrinkage)


def _pack(cov):
    """``cov`` as the float16 lower triangle of its Cholesky factor divided by the square root of its largest
    diagonal entry (every entry within +-1), and that root. What is rounded is the factor, so the covariance
    it gives back, ``L L^T``, stays positive semi-definite (rounding the covariance itself does not)."""
    d = len(cov)
    scale = np.sqrt(max(float(np.max(np.diag(cov))), 1e-12)) if d else 1.0
    cov = cov + np.eye(d) * FLOOR * max(float(np.trace(cov)) / max(d, 1), 1e-12)  # units that never fired
    factor = (np.linalg.cholesky(cov) / scale)[np.tril_indices(d)] if d else np.zeros(0)
    return factor.astype(np.float16), np.array([scale], np.float32)


def _unpack(packed, scale, d):
    factor = np.zeros((d, d))
    factor[np.tril_indices(d)] = packed.astype(np.float64) * float(scale[0])
    return factor @ factor.T


def _whitener(cov, n):
    """L^-1 for the Cholesky factor L of the OAS-shrunk covariance (what turns distances Euclidean)."""
    shrunk = oas(cov, n)
    d = len(shrunk)
    shrunk[np.diag_indices(d)] += FLOOR * max(np.trace(shrunk) / max(d, 1), 1e-12)
    chol = np.linalg.cholesky(shrunk)
    return solve_triangular(chol, np.eye(d), lower=True)


def _first_of_softmax(scores):
    """softmax(scores, axis=1)[:, 0], by numpy's ufuncs (scipy's softmax costs more than the rest for one image)."""
    return np.exp(scores[:, 0] - np.logaddexp.reduce(scores, axis=1))


def _squared_distances(zw, centres_w):
    """||zw_i - c_j||^2 for whitened rows (n, d) and whitened centres (k, d): (n, k)."""
    return (zw ** 2).sum(1)[:, None] - 2.0 * zw @ centres_w.T + (centres_w ** 2).sum(1)[None]


class TaskGaussians:
    """The statistics store: per recogniser m its units, per task s >= m class means and counts, one
    pooled covariance; per task its scope statistics. Arrays only, no per-image rows."""

    def __init__(self):
        self.active = []  # per m: int32 (a, 2) (layer number, unit) pairs of the units task m keeps
        self.counts = []  # per m: {s: int64 (C_s,)} images of each class of task s
        self.means = []  # per m: {s: float32 (C_s, a)} class means of task s's features in sub-network m
        self.cov = []  # per m: float16 (a (a + 1) / 2,) Cholesky factor of the pooled within-class covariance / cov_scale[m]
        self.cov_scale = []  # per m: float32 (1,)
        self.scope_means = []  # per m: float32 (C_m, 9) class means of task m's input statistics
        self.scope_var = []  # per m: float32 (a,) task m's within-class variances of its features
        self.scope_cov = []  # per m: float32 (9, 9) OAS-shrunk within-class covariance of its input statistics
        self.scope = []  # per m: float32 (len(QUANTILES),) quantiles of its validation scope distances, or (0,)
        self._whiteners = {}  # m -> (cov[m] it was made from, L^-1): derived, never saved

    needs_relevance = False  # prediction reads activations only: no LRP unless a heatmap is asked for

    def columns(self, m, layer_sizes):
        """Recogniser m's units as flat indices of a network with these layer sizes."""
        a = self.active[m]
        return layer_starts(layer_sizes)[a[:, 0]] + a[:, 1]

    # ------------------------------------------------------------------ learning
    def add_task(self, m, moments, stat_moments, kept_flat, layer_sizes):
        """Start recogniser m from task m's :class:`ClassMoments` in sub-network m (features of the units
        ``kept_flat`` marks) and of its input statistics."""
        self.active.append(unit_pairs(np.flatnonzero(kept_flat), layer_starts(layer_sizes)))
        self.counts.append({})
        self.means.append({})
        self.cov.append(np.zeros(0, np.float16))
        self.cov_scale.append(np.ones(1, np.float32))
        self.add(m, m, moments)
        n = max(int(moments.counts.sum()) - 1, 1)
        self.scope_means.append(stat_moments.means.astype(np.float32))
        self.scope_var.append((np.diag(moments.scatter) / n).astype(np.float32))
        stat_cov = oas(stat_moments.scatter / n, n)
        stat_cov[np.diag_indices(N_STATISTICS)] += FLOOR * max(float(np.trace(stat_cov)) / N_STATISTICS, 1e-12)
        self.scope_cov.append(stat_cov.astype(np.float32))

    def add(self, m, s, moments):
        """Add task s's :class:`ClassMoments` in sub-network m: class means and counts, and its scatter to the
        pooled covariance."""
        before, d = self.n_images(m), len(self.active[m])
        pooled = _unpack(self.cov[m], self.cov_scale[m], d) * before if before else 0.0
        self.cov[m], self.cov_scale[m] = _pack((pooled + moments.scatter) / max(before + int(moments.counts.sum()), 1))
        self.counts[m][s], self.means[m][s] = moments.counts.copy(), moments.means.astype(np.float32)

    def set_scope(self, m, val_distances):
        """Keep task m's validation scope distances as quantiles (none: the task claims no image)."""
        d = np.asarray(val_distances, np.float64)
        self.scope.append(np.quantile(d, QUANTILES).astype(np.float32) if len(d) else np.zeros(0, np.float32))

    def n_images(self, m):
        return int(sum(c.sum() for c in self.counts[m].values()))

    # ------------------------------------------------------------------ using it
    def _model(self, m):
        """Recogniser m ready to score: L^-1, every (task, class) mean whitened, their log counts, and where each
        task's classes start. Made once per covariance (a new task replaces it)."""
        cached = self._whiteners.get(m)
        if cached is None or cached[0] is not self.cov[m]:
            whitener = _whitener(_unpack(self.cov[m], self.cov_scale[m], len(self.active[m])), self.n_images(m))
            tasks = sorted(self.counts[m])
            present = [self.counts[m][s] > 0 for s in tasks]
            centres = np.concatenate([self.means[m][s][p].astype(np.float64) for s, p in zip(tasks, present)]) @ whitener.T
            log_n = np.log(np.concatenate([self.counts[m][s][p] for s, p in zip(tasks, present)]).astype(np.float64))
            starts = np.cumsum([0] + [int(p.sum()) for p in present])
            cached = self._whiteners[m] = (self.cov[m], whitener, centres, log_n, starts)
        return cached[1:]

    def log_likelihoods(self, m, z):
        """(n, T - m): log sum_c n_sc N(z; mu_sc, Sigma_m) for each task s >= m, up to a shared constant."""
        whitener, centres, log_n, starts = self._model(m)
        scores = log_n[None] - 0.5 * _squared_distances(z @ whitener.T, centres)
        return np.stack([np.logaddexp.reduce(scores[:, a:b], axis=1) for a, b in zip(starts[:-1], starts[1:])], 1)

    def _features(self, units, m, layer_sizes):
        """Recogniser m's features of (N, T, 2U) unit signals (relevance, then activations)."""
        return features(units[:, m, sum(layer_sizes.values()) + self.columns(m, layer_sizes)])

    def p_task(self, units, layer_sizes):
        """P_T (N, T) for (N, T, 2U) unit signals (only the activations are read): the chain of P_R."""
        p_r = [_first_of_softmax(self.log_likelihoods(m, self._features(units, m, layer_sizes)) / TEMPERATURE)
               for m in range(len(self.active) - 1)]
        return chain_probabilities(np.stack(p_r, 1) if p_r else np.zeros((len(units), 0)))

    def scope_score(self, units, stats, rate, layer_sizes):
        """``min over tasks of distance / threshold`` (see :mod:`rerelrp.method.scope`); NaN when no task has
        validation distances."""
        claims = [m for m in range(len(self.active)) if len(self.scope[m])]
        if not claims:
            return np.full(len(units), np.nan)
        distances = np.stack([self.scope_distance(m, self._features(units, m, layer_sizes), stats) for m in claims], 1)
        return scope_scores(distances, [self.threshold(m, rate) for m in claims])

    def scope_distance(self, m, z, stats):
        """Task m's scope distance of each image: min over its classes of the scaled distance, two equal blocks."""
        counts = self.counts[m][m]
        present = counts > 0
        var = np.maximum(self.scope_var[m].astype(np.float64), FLOOR * max(float(self.scope_var[m].mean()), 1e-12))
        a = len(self.active[m])
        d_feat = _squared_distances(z / np.sqrt(var), self.means[m][m][present] / np.sqrt(var))
        whitener = solve_triangular(np.linalg.cholesky(self.scope_cov[m].astype(np.float64)), np.eye(N_STATISTICS), lower=True)
        d_stat = _squared_distances(stats @ whitener.T, self.scope_means[m][present].astype(np.float64) @ whitener.T)
        return np.sqrt(np.maximum(d_feat / max(a, 1) + d_stat / N_STATISTICS, 0.0).min(1))

    def threshold(self, m, rate):
        """Task m's threshold for the rejection ``rate``: its validation distances' (1 - rate) quantile."""
        return float(np.interp(1.0 - rate, QUANTILES, self.scope[m].astype(np.float64)))

    def nbytes_of_task(self, t):
        """Bytes kept because of task t: its means and counts in every recogniser, its own recogniser's
        covariance, unit list and scope statistics."""
        blocks = sum(self.means[m][t].nbytes + self.counts[m][t].nbytes for m in range(len(self.means)) if t in self.means[m])
        own = (self.active[t].nbytes + self.cov[t].nbytes + self.cov_scale[t].nbytes + self.scope_means[t].nbytes
               + self.scope_var[t].nbytes + self.scope_cov[t].nbytes + self.scope[t].nbytes) if t < len(self.active) else 0
        return blocks + own

    n_rows = 0  # no per-image rows: what a privacy statement counts

    # ------------------------------------------------------------------ saving
    def to_arrays(self):
        """Every array of the store by name (for saving)."""
        out = {}
        for m in range(len(self.active)):
            out.update({f"gauss/active/{m}": self.active[m], f"gauss/cov/{m}": self.cov[m],
                        f"gauss/cov_scale/{m}": self.cov_scale[m], f"gauss/scope_means/{m}": self.scope_means[m],
                        f"gauss/scope_var/{m}": self.scope_var[m], f"gauss/scope_cov/{m}": self.scope_cov[m],
                        f"gauss/scope/{m}": self.scope[m]})
            for s in self.counts[m]:
                out[f"gauss/counts/{m}/{s}"], out[f"gauss/means/{m}/{s}"] = self.counts[m][s], self.means[m][s]
        return out

    @classmethod
    def from_arrays(cls, arrays, n_tasks, layer_sizes, head_sizes):
        """The store saved by :meth:`to_arrays`; raises ValueError naming the first array that does not fit."""
        store, sizes = cls(), np.asarray(list(layer_sizes.values()))
        for m in range(n_tasks):
            active = _array(arrays, f"gauss/active/{m}", np.int32, None, 2)
            if len(active) == 0 or (np.any(active[:, 0] < 0) or np.any(active[:, 0] >= len(sizes)) or np.any(active[:, 1] < 0)
                                    or np.any(active[:, 1] >= sizes[active[:, 0]])):
                raise ValueError(f"gauss/active/{m} is empty or points outside the network's layers")
            a = len(active)
            store.active.append(active)
            store.cov.append(_array(arrays, f"gauss/cov/{m}", np.float16, a * (a + 1) // 2))
            store.cov_scale.append(_array(arrays, f"gauss/cov_scale/{m}", np.float32, 1))
            store.counts.append({}), store.means.append({})
            for s in range(m, n_tasks):
                counts = _array(arrays, f"gauss/counts/{m}/{s}", np.int64, head_sizes[s])
                if np.any(counts < 0) or counts.sum() == 0:
                    raise ValueError(f"gauss/counts/{m}/{s} counts no image")
                store.counts[m][s] = counts
                store.means[m][s] = _array(arrays, f"gauss/means/{m}/{s}", np.float32, head_sizes[s], a)
            store.scope_means.append(_array(arrays, f"gauss/scope_means/{m}", np.float32, head_sizes[m], N_STATISTICS))
            store.scope_var.append(_array(arrays, f"gauss/scope_var/{m}", np.float32, a))
            stat_cov = _array(arrays, f"gauss/scope_cov/{m}", np.float32, N_STATISTICS, N_STATISTICS)
            if not np.allclose(stat_cov, stat_cov.T) or np.any(np.linalg.eigvalsh(stat_cov.astype(np.float64)) <= 0):
                raise ValueError(f"gauss/scope_cov/{m} is not a positive definite covariance")
            store.scope_cov.append(stat_cov)
            scope = arrays.get(f"gauss/scope/{m}")
            store.scope.append(_array(arrays, f"gauss/scope/{m}", np.float32, len(QUANTILES) if scope is not None and len(scope)
                                      else 0))
        extra = set(arrays) - set(store.to_arrays())
        if extra:
            raise ValueError(f"unexpected arrays: {', '.join(sorted(extra)[:5])}")
        return store


def _array(arrays, name, dtype, *shape):
    """``arrays[name]`` copied, if it is finite ``dtype`` of ``shape`` (None: any length); else ValueError."""
    value = arrays.get(name)
    if value is None:
        raise ValueError(f"{name} is missing")
    ok = value.dtype == dtype and value.ndim == len(shape) and all(s is None or n == s for n, s in zip(value.shape, shape))
    if not ok or (value.dtype.kind == "f" and not np.all(np.isfinite(value))):
        raise ValueError(f"{name} is {value.dtype} {value.shape}, expected finite {np.dtype(dtype).name} "
                         f"{tuple('n' if s is None else s for s in shape)}")
    return value.copy()
