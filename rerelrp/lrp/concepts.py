"""What a unit responds to: CRP's conditional relevance and reference patches, computed on demand.

Concept Relevance Propagation (Achtibat et al., Nature Machine Intelligence 2023) splits an
explanation by the units it passes through. The conditional heatmap of unit ``u`` of layer ``L``
is LRP from the sub-network's predicted class with the relevance at ``L`` kept for ``u`` only,
and every other unit of ``L`` masked to zero, then propagated on to the input. Under the
composite's rules, relevance below ``L`` is linear in the relevance at ``L``. So each conditional
heatmap sums to the unit's own relevance ``R_u``, and the heatmaps of all units of ``L`` add up
to the ordinary heatmap (``tests/test_concepts.py`` checks both on a tiny network).

zennit-crp 0.6 pins ``zennit<=0.4.6``, which cannot live beside the zennit 0.5 this project uses,
so the masking is done here. Autograd under the composite's hooks already yields the relevance
at every unit's output, so masking it and propagating once more is all CRP needs.

Reference patches show what a unit responds to: the images of the task, loaded in this session,
on which the unit is most active, each cropped around the place it is most active (activation
maximisation, one of CRP's two reference choices). Nothing here is written to disk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rerelrp.lrp.relevance import make_composite
from rerelrp.model.inputs import to_input


@dataclass
class Concept:
    """One unit of one sub-network on one image: its relevance, conditional heatmap and reference patches."""

    layer: str
    unit: int
    relevance: float  # R_u: the unit's share of the explanation (sums over the units of its layer to the start logit)
    heatmap: np.ndarray  # (H, W) conditional input relevance; sums to ``relevance``
    references: list  # uint8 (h, w, 3) patches of the task's images where the unit is most active


def _task_masks(learner, task, n):
    kept = learner.ledger_.group_masks([task], learner.device_)
    return {name: mask.expand(n, -1) for name, mask in kept.items()}


def conditional_heatmaps(learner, image, task, layer, units, composite=None):
    """CRP heatmaps of ``units`` of ``layer`` in sub-network ``task`` for one uint8 ``image``.

    LRP starts at the class sub-network ``task`` predicts. Returns ``(relevance (K,), heatmaps (K, H, W),
    full_heatmap (H, W))``; ``full_heatmap`` is the unconditioned heatmap of the same pass.
    """
    net, units = learner.net_, list(units)
    x = to_input(np.asarray(image)[None], learner.input_size_).to(learner.device_)
    k = len(units) + 1  # one row per unit, and one unconditioned
    x = x.repeat(k, 1, 1, 1).requires_grad_(True)
    composite = make_composite(composite or learner.composite, net.arch, tuple(x.shape), learner.device_)
    lo, hi = learner.offsets_[task], learner.offsets_[task + 1]
    with composite.context(net), net.unit_outputs() as stored, torch.enable_grad(), \
            net.subnetworks(_task_masks(learner, task, k)):
        logits = net(x)
        start = torch.zeros_like(logits)
        start[:, lo + int(logits[0, lo:hi].argmax())] = 1.0
        out = stored[layer]
        (at_layer,) = torch.autograd.grad(logits, out, grad_outputs=start, retain_graph=True)
        keep = torch.zeros_like(at_layer)
        for row, u in enumerate(units):
            keep[row, u] = 1.0
        keep[-1] = 1.0  # the last row keeps the whole layer: the ordinary heatmap
        (heat,) = torch.autograd.grad(out, x, grad_outputs=at_layer * keep)
    rel = at_layer[0].sum(dim=tuple(range(1, at_layer.dim() - 1))) if at_layer.dim() > 2 else at_layer[0]
    heat = heat.sum(1).detach().cpu().numpy()
    return rel[units].detach().cpu().numpy(), heat[:-1], heat[-1]


def reference_patches(learner, images, task, layer, unit, top=3, batch=256):
    """The ``top`` patches of ``images`` (uint8, N H W C) where ``unit`` of ``layer`` is most active in sub-network ``task``.

    A conv unit's patch is the part of the image its most active position looks at, about a
    quarter of the image side or its stride, whichever is larger. A linear unit has no place, so
    its patch is the whole image.
    """
    net, best = learner.net_, []
    with torch.no_grad(), net.unit_outputs() as stored:
        for start in range(0, len(images), batch):
            part = images[start : start + batch]
            x = to_input(part, learner.input_size_).to(learner.device_)
            with net.subnetworks(_task_masks(learner, task, len(x))):
                net(x)
            act = torch.relu(stored[layer][:, unit]).cpu()
            flat = act.reshape(len(act), -1)
            peak, where = flat.max(1)
            best += [(float(p), start + i, int(w), act.shape[1:]) for i, (p, w) in enumerate(zip(peak, where))]
    best.sort(key=lambda b: -b[0])
    return [_crop(images[i], where, shape) for _, i, where, shape in best[:top]]


def _crop(image, where, shape):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, -1)
    if len(shape) < 2:  # a linear unit: the whole image
        return image
    h, w = image.shape[:2]
    rows, cols = shape
    r, c = divmod(where, cols)
    half_h, half_w = max(h // 8, h // rows), max(w // 8, w // cols)
    cy, cx = int((r + 0.5) * h / rows), int((c + 0.5) * w / cols)
    return image[max(0, cy - half_h) : cy + half_h, max(0, cx - half_w) : cx + half_w]


def concepts(learner, image, task, top_units, task_images, references=3, composite=None):
    """:class:`Concept` of each ``(layer, unit)`` in ``top_units`` for sub-network ``task`` on ``image``."""
    out = []
    for layer in dict.fromkeys(layer for layer, _ in top_units):
        units = [u for name, u in top_units if name == layer]
        rel, heats, _ = conditional_heatmaps(learner, image, task, layer, units, composite)
        for u, r, h in zip(units, rel, heats):
            refs = reference_patches(learner, task_images, task, layer, u, references) if len(task_images) else []
            out.append(Concept(layer, int(u), float(r), h, refs))
    order = {pair: k for k, pair in enumerate(top_units)}
    return sorted(out, key=lambda c: order.get((c.layer, c.unit), 0))
