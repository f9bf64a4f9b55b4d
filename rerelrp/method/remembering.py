"""What a learned task leaves behind so that its images are recognised later, with no image kept.

Two recognisers (the ``recognizer`` setting): ``gaussian`` (the default) keeps class statistics of every
task's activations in every sub-network (:mod:`rerelrp.method.task_gaussians`), read in forward passes;
``forest`` (the paper's) keeps relevance and activation rows of a sample of each task's training
images and refits random forests on them (:mod:`rerelrp.method.recognition`).
"""
from __future__ import annotations

import numpy as np
import torch

from rerelrp.method.recognition import ForestRecognition, RelevanceStore, fit_recognizer, signals
from rerelrp.method.scope import N_STATISTICS, scope_statistics
from rerelrp.method.task_gaussians import ClassMoments, TaskGaussians, features
from rerelrp.model.inputs import LazyInputs

RECOGNIZERS = ("gaussian", "forest")


def new_store(recognizer):
    return TaskGaussians() if recognizer == "gaussian" else RelevanceStore()


def recognition(recognizer, store, forests):
    """What a :class:`~rerelrp.method.predictor.Predictor` asks for P_T and the scope score."""
    return store if recognizer == "gaussian" else ForestRecognition(store, forests)


def remember_statistics(store, sub, task, t, input_size, report):
    """Class statistics of all of task t's training images in every sub-network of ``sub`` so far (a
    :class:`~rerelrp.method.subnetworks.Subnetworks`), and t's scope data, into ``store``."""
    ledger, n_classes = sub.ledger, task.n_classes
    sizes = ledger.layer_sizes
    kept = ledger.flat(ledger.task(t))
    columns = [store.columns(m, sizes) for m in range(t)] + [np.flatnonzero(kept)]
    moments = [ClassMoments(n_classes, len(c)) for c in columns]
    stat_moments = ClassMoments(n_classes, N_STATISTICS)
    x, labels = LazyInputs(task.train.images, input_size), np.asarray(task.train.labels)
    per_pass = max(1, sub.batch // (t + 1))  # one stacked pass holds as many rows as an LRP batch
    total = int(np.ceil(len(x) / per_pass))
    for i, start in enumerate(range(0, len(x), per_pass)):
        xb, yb = x[start : start + per_pass], labels[start : start + per_pass]  # xb: float inputs
        _, acts = sub.forward_stacked(xb, range(t + 1))
        for m, c in enumerate(columns):
            moments[m].add(features(acts[m][:, c].numpy()), yb)
        stat_moments.add(scope_statistics(xb), yb)
        report("recognizer", i + 1, total, f"class statistics of task {t} in {t + 1} sub-network(s)")
    for m in range(t):
        store.add(m, t, moments[m])
    store.add_task(t, moments[t], stat_moments, kept, sizes)
    store.set_scope(t, _statistics_distances(store, sub, task, t, input_size))


def _statistics_distances(store, sub, task, t, input_size):
    """Scope distances of task t's validation images in its own sub-network (they set its threshold)."""
    if len(task.val) == 0:
        return np.zeros(0)
    x_val = LazyInputs(task.val.images, input_size)
    _, acts = sub.forward_signals(x_val, t)
    z = features(acts[:, store.columns(t, sub.ledger.layer_sizes)].numpy())
    return store.scope_distance(t, z, scope_statistics(x_val))


def remember_rows(store, sub, x, task, t, input_size, report, n_features, activation_features, n_trees, seed):
    """Relevance rows of the sampled training images ``x`` of task t through every sub-network so far into
    ``store``; returns the refitted forests."""
    n = len(x)
    groups = torch.arange(t + 1).repeat_interleave(n)
    res = sub.lrp(x, groups, report=report, phase="recognizer", rows=torch.arange(n).repeat(t + 1))
    rows = signals(res).reshape(t + 1, n, -1)
    ledger = sub.ledger
    sizes = ledger.layer_sizes
    store.add_task(t, rows[t], n_features, sizes, ledger.flat(ledger.task(t)) if activation_features else None)
    store.scope_stats.append(scope_statistics(x))
    store.scope.append(_row_distances(store, sub, task, t, input_size))
    for m in range(t):
        store.add_ood(m, t, rows[m], sizes)
    forests = []
    for m in range(t):
        X, y = store.training_set(m)
        report("recognizer", m + 1, t, f"fitting recogniser of task {m} on {len(y)} rows")
        forests.append(fit_recognizer(X, y, n_trees, seed=seed * 7919 + m))
    return forests


def _row_distances(store, sub, task, t, input_size):
    """Scope distances of task t's validation images in its own sub-network (they set its threshold).

    Empty without validation images: the task then claims no image (see :mod:`rerelrp.method.scope`)."""
    if len(task.val) == 0:
        return np.zeros(0, np.float32)
    x_val = LazyInputs(task.val.images, input_size)
    _, acts = sub.forward_signals(x_val, t)
    columns = store.activation_columns(t, sub.ledger.layer_sizes) - sub.ledger.n_units
    rows = np.concatenate([acts[:, columns].numpy(), scope_statistics(x_val)], 1)
    return store.scope_search(t).distance(rows).astype(np.float32)
