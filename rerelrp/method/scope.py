"""Is an image from any learned task at all? The out-of-scope score.

The recognisers' chain always gives some task P_T = 1 in total, so a chest X-ray shown to a
blood-cell model gets a confident answer. The scope check asks each sub-network whether the image
looks like its own task. It compares the activations of the units the sub-network keeps (the
columns its recogniser already stores) and nine input statistics (mean and spread of each colour
channel, colourfulness, mean brightness of the image's border and of its inside) with the same
numbers of its task's training images, each column scaled by its spread there, the activations and
the statistics weighted as two equal blocks, by the distance to the k-th nearest row
(:class:`ScopeReference`). A task's distances on its own validation images, measured when it is
learned, set its threshold for a chosen in-scope rejection rate; its sub-network is frozen from then
on, so the distances never change.
``scope_score = min over tasks of distance / threshold``: above 1, no learned task claims the image.

Why this and not the logits: on pneumonia -> breast, max-softmax and energy flagged almost no
retina or blood-cell images (AUROC 0.11-0.74); raw activations flagged 43-99 % of the retina
images depending on the seed; scaled activations with input statistics 100 % (docs/method-notes.md).
Why the border and the equal blocks: real CT and MR slices (a dark field around the body) scored
1.02-2.6 against a chest X-ray -> breast ultrasound model, and half of a brain MR series passed; the
seven statistics were a few columns among 200-250 activations, and they alone did not tell an MR slice
from an ultrasound image. With both, every real CT and MR slice was flagged (docs/scope-real.md).
Workspaces saved with the seven statistics keep the distance their thresholds were set with.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from rerelrp.model.batching import rows_per_pass
from rerelrp.model.inputs import LazyInputs

NEIGHBOURS = 5  # the k-th nearest training row: one near-duplicate training image does not decide alone
MOMENTS = 7  # input_statistics; workspaces saved before the layout statistics hold these alone
N_STATISTICS = MOMENTS + 2  # scope_statistics: the moments, then the border's and the inside's brightness
BORDER = 14  # the border ring is 1/14 of the side wide (2 pixels at 28 px)


def _per_batch(compute, x, width):
    """``compute`` on a float batch, or on :class:`~rerelrp.model.inputs.LazyInputs` batch by batch."""
    if isinstance(x, LazyInputs):

        # 256 images at a time up to 28 px, fewer above (24 at 128 px: 256 were 0.2 GB of temporaries)
        chunks = x.batches(min(256, rows_per_pass(x.size)))
        return np.concatenate([compute(b) for b in chunks]) if len(x) else np.zeros((0, width), np.float32)
    return compute(torch.as_tensor(x))


def _moments(x):
    mean, spread = x.mean((2, 3)), x.std((2, 3), correction=0)
    colour = (x[:, 0] - x[:, 1]).abs().mean((1, 2)) + (x[:, 1] - x[:, 2]).abs().mean((1, 2))
    return torch.cat([mean, spread, colour[:, None]], 1).cpu().numpy().astype(np.float32)


def _layout(x):
    """Mean brightness of the border ring and of the inside: CT and MR slices sit in a dark field,
    chest X-rays and ultrasound fill the frame."""
    gray = x.mean(1)
    side = gray.shape[-1]
    ring = torch.ones(gray.shape[-2:], dtype=torch.bool, device=gray.device)
    w = max(1, round(side / BORDER))
    ring[w:-w, w:-w] = False
    return torch.stack([gray[:, ring].mean(1), gray[:, ~ring].mean(1)], 1).cpu().numpy().astype(np.float32)


def input_statistics(x):
    """Per network input (N, 3, H, W): each channel's mean and spread, and colourfulness; float32 (N, 7).
    ``x`` may be :class:`~rerelrp.model.inputs.LazyInputs` (read batch by batch)."""
    return _per_batch(_moments, x, MOMENTS)


def scope_statistics(x):
    """:func:`input_statistics` and the brightness of the border and of the inside; float32 (N, 9)."""
    return _per_batch(lambda b: np.concatenate([_moments(b), _layout(b)], 1), x, N_STATISTICS)


def spread(reference):
    """Each column's spread over the reference rows, what the scope distance divides it by.

    Not scikit-learn's StandardScaler: it would centre (distances do not change) and divide a
    near-constant column by its tiny spread, so one unit that barely fires would decide every
    distance; the 1e-6 floor keeps such columns quiet.
    """
    return np.asarray(reference, np.float64).std(0) + 1e-6


class KthNearest:
    """Euclidean distance of rows to their k-th nearest reference row (k capped by the rows there are).

    The search index is built once, so a reference asked again and again (every prediction asks
    every task's) is not indexed anew each time.
    """

    def __init__(self, reference, k=NEIGHBOURS):
        reference = np.asarray(reference, np.float32)
        self.index = NearestNeighbors(n_neighbors=min(k, len(reference))).fit(reference)

    def __call__(self, rows):
        rows = np.asarray(rows, np.float32)
        if len(rows) == 0:
            return np.zeros(0)
        distances, _ = self.index.kneighbors(rows)
        return distances[:, -1].astype(np.float64)


class ScopeReference:
    """A task's reference rows for the scope distance (activations, then ``n_stats`` input statistics).

    Every column is scaled by its spread over the reference rows. With :data:`N_STATISTICS` statistics
    the activations and the statistics count as two equal blocks (each divided by the square root of
    its width), so nine statistics are not drowned by a few hundred activations. ``n_stats`` =
    :data:`MOMENTS` is a workspace saved before that: its thresholds were set on the plain scaled
    distance, which it keeps. The scaling and the index are made once: a learned task's rows never change.
    """

    def __init__(self, reference, n_stats):
        self.scale = spread(reference)
        n_act = reference.shape[1] - n_stats
        self.weights = None if n_stats == MOMENTS else np.r_[np.full(n_act, 1 / np.sqrt(max(n_act, 1))),
                                                             np.full(n_stats, 1 / np.sqrt(n_stats))]
        self.nearest = KthNearest(self._placed(reference))

    def _placed(self, rows):
        rows = rows / self.scale
        return rows if self.weights is None else rows * self.weights

    def distance(self, rows):
        """The scope distance of each row: to the k-th nearest reference row, scaled and weighted alike."""
        return self.nearest(self._placed(rows))


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
