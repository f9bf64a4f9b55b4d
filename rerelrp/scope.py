"""Is an image from any learned task at all? The out-of-scope score.

The recognisers' chain always gives some task P_T = 1 in total, so a chest X-ray shown to a
blood-cell model gets a confident answer. The scope check asks each sub-network whether the image
looks like its own task. It compares the activations of the units the sub-network keeps (the
columns its recogniser already stores) and seven input statistics (mean and spread of each colour
channel, colourfulness) with the same numbers of its task's training images, each column scaled by
its spread there, by the distance to the k-th nearest row. A task's distances on its own validation
images, measured when it is learned, set its threshold for a chosen in-scope rejection rate; its
sub-network is frozen from then on, so the distances never change.
``scope_score = min over tasks of distance / threshold``: above 1, no learned task claims the image.

Why this and not the logits: on pneumonia -> breast, max-softmax and energy flagged almost no
retina or blood-cell images (AUROC 0.11-0.74); raw activations flagged 43-99 % of the retina
images depending on the seed; scaled activations with input statistics 100 % (docs/method-notes.md).
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from rerelrp.inputs import LazyInputs

NEIGHBOURS = 5  # the k-th nearest training row: one near-duplicate training image does not decide alone
N_STATISTICS = 7


def input_statistics(x):
    """Per network input (N, 3, H, W): each channel's mean and spread, and colourfulness; float32 (N, 7).
    ``x`` may be :class:`~rerelrp.inputs.LazyInputs` (read batch by batch)."""
    if isinstance(x, LazyInputs):
        from rerelrp.subnetworks import rows_per_pass  # late: subnetworks imports this module

        # 256 images at a time up to 28 px, fewer above (24 at 128 px: 256 were 0.2 GB of temporaries)
        chunks = x.batches(min(256, rows_per_pass(x.size)))
        return np.concatenate([input_statistics(b) for b in chunks]) if len(x) else np.zeros((0, 7), np.float32)
    x = torch.as_tensor(x)
    mean, spread = x.mean((2, 3)), x.std((2, 3), correction=0)
    colour = (x[:, 0] - x[:, 1]).abs().mean((1, 2)) + (x[:, 1] - x[:, 2]).abs().mean((1, 2))
    return torch.cat([mean, spread, colour[:, None]], 1).cpu().numpy().astype(np.float32)


def scaled(reference, rows):
    """Reference and query rows with every column divided by its spread over the reference rows."""
    scale = np.asarray(reference, np.float64).std(0) + 1e-6
    return reference / scale, rows / scale


def knn_distance(reference, rows, k=NEIGHBOURS):
    """Euclidean distance of each row to its k-th nearest reference row (k capped by the rows there are)."""
    reference, rows = np.asarray(reference, np.float32), np.asarray(rows, np.float32)
    if len(rows) == 0:
        return np.zeros(0)
    k = min(k, len(reference))
    distances, _ = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(rows)
    return distances[:, -1].astype(np.float64)


def threshold(val_distances, rate):
    """The distance above which ``rate`` of a task's validation images would be called out of scope."""
    return float(np.quantile(np.asarray(val_distances, np.float64), 1.0 - rate))


def scope_scores(distances, thresholds):
    """``min over tasks of distance / threshold`` for (N, T) distances; > 1 means no task claims the image."""
    ratio = np.asarray(distances, np.float64) / np.maximum(np.asarray(thresholds, np.float64), 1e-12)[None]
    return ratio.min(1) if ratio.shape[1] else np.full(len(ratio), np.nan)


def evaluate_scope(learner, tasks, foreign):
    """AUROC blocks: the test images of the learned ``tasks`` (in scope) against each entry of
    ``foreign`` (name -> uint8 images of no learned task)."""
    inside = np.concatenate([learner.predict(t.test.images).scope_score for t in tasks[: learner.n_tasks]])
    return [auroc_block(inside, learner.predict(images).scope_score, name) for name, images in foreign.items()]


def auroc_block(in_scope, out_of_scope, source):
    """What ``metrics.json`` reports for an out-of-scope set: AUROC and the shares flagged."""
    from sklearn.metrics import roc_auc_score

    in_scope, out_of_scope = np.asarray(in_scope), np.asarray(out_of_scope)
    y = np.r_[np.zeros(len(in_scope)), np.ones(len(out_of_scope))]
    return {
        "source": source,
        "auroc": float(roc_auc_score(y, np.r_[in_scope, out_of_scope])),
        "flagged_out_of_scope": float(np.mean(out_of_scope > 1.0)),
        "flagged_in_scope": float(np.mean(in_scope > 1.0)),
        "n_out_of_scope": int(len(out_of_scope)),
        "n_in_scope": int(len(in_scope)),
    }
