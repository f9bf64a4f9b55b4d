"""Who owns which unit, how much capacity is left, and exact freezing of what earlier tasks kept.

A task's *kept set* is a boolean vector per unit layer. Units kept by any earlier task are
frozen: their incoming weights, bias and BatchNorm parameters and statistics never change
again. Freezing is exact because every frozen entry is put back after each optimiser step
(weight decay and momentum would otherwise move it), and gradients of frozen entries are
zeroed so the optimiser's state never builds up on them.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def layer_starts(layer_sizes):
    """Flat index of each layer's first unit (layers in network order)."""
    return np.concatenate([[0], np.cumsum(list(layer_sizes.values()))[:-1]]).astype(np.int64)


def unit_pairs(flat, starts):
    """Flat unit indices as int32 (layer number, unit) pairs."""
    flat = np.asarray(flat, dtype=np.int64)
    layer = np.searchsorted(starts, flat, side="right") - 1
    return np.stack([layer, flat - starts[layer]], axis=1).astype(np.int32).reshape(-1, 2)


class UnitLedger:
    """Kept sets of every task, layer by layer, and the capacity they leave.

    ``kept[layer]`` is a bool matrix (tasks, units): row t marks the units task t kept. A layer's
    size is the width of its matrix, set from the network when the ledger is made and widened
    by :meth:`grow` together with the network (see ``ReReLRP._grow``).
    """

    def __init__(self, layer_sizes):
        self.kept = {name: np.zeros((0, n), bool) for name, n in layer_sizes.items()}

    @property
    def layer_sizes(self):
        return {name: k.shape[1] for name, k in self.kept.items()}

    @property
    def n_tasks(self):
        return next(iter(self.kept.values())).shape[0] if self.kept else 0

    @property
    def slices(self):
        """Where each layer's units sit in the flat unit vector used by relevance and pruning."""
        return {name: slice(int(start), int(start) + n)
                for (name, n), start in zip(self.layer_sizes.items(), layer_starts(self.layer_sizes))}

    @property
    def n_units(self):
        return sum(self.layer_sizes.values())

    def task(self, t):
        """Task t's kept set, per layer."""
        return {name: k[t] for name, k in self.kept.items()}

    def frozen(self, before=None):
        """Units kept by any task before ``before`` (default: all tasks so far), per layer."""
        return {name: k[:before].any(axis=0) for name, k in self.kept.items()}

    def flat(self, per_layer):
        return np.concatenate([per_layer[name] for name in self.kept])

    def unflat(self, vector):
        return {name: vector[s] for name, s in self.slices.items()}

    def grow(self, name, n_new):
        """Record ``n_new`` fresh units at the end of layer ``name``: kept by no task so far."""
        k = self.kept[name]
        self.kept[name] = np.concatenate([k, np.zeros((k.shape[0], n_new), bool)], axis=1)

    def free_deficit(self, min_free):
        """Per layer, how many units to add so that at least ``min_free`` of it is free again."""
        frozen = self.frozen()
        out = {}
        for name, n in self.layer_sizes.items():
            free = int((~frozen[name]).sum())
            if free < math.ceil(min_free * n):
                out[name] = math.ceil((min_free * n - free) / (1.0 - min_free))
        return out

    def add(self, kept_flat):
        """Append the kept set of the next task, given as one flat bool vector over all layers."""
        rows = self.unflat(np.asarray(kept_flat, bool))
        self.kept = {name: np.vstack([k, rows[name][None]]) for name, k in self.kept.items()}

    def group_masks(self, tasks, device):
        """Float masks (len(tasks), units) per layer, one row per sub-network."""
        index = list(tasks)
        return {name: torch.tensor(k[index], dtype=torch.float32, device=device) for name, k in self.kept.items()}

    def capacity(self, warn_below=None):
        """Per layer: units, kept by each task, new units each task froze, shared, free.

        ``shared`` counts units kept by more than one task; ``free`` units no task kept.
        """
        rows = []
        for name, k in self.kept.items():
            n = k.shape[1]
            seen = np.logical_or.accumulate(k, axis=0) if len(k) else np.zeros((0, n), bool)
            before = np.vstack([np.zeros((1, n), bool), seen[:-1]]) if len(k) else seen
            free = int((~seen[-1]).sum()) if len(k) else n
            row = {
                "layer": name,
                "units": n,
                "kept_by_task": k.sum(axis=1).astype(int).tolist(),
                "new_by_task": (k & ~before).sum(axis=1).astype(int).tolist(),
                "shared": int((k.sum(axis=0) > 1).sum()),
                "free": free,
                "free_share": free / n,
            }
            if warn_below is not None:
                row["warning"] = free / n < warn_below
            rows.append(row)
        return rows


def _param_masks(layer, frozen):
    """(tensor, entry mask) pairs covering every parameter and statistic that belongs to ``layer``'s units."""
    f = torch.as_tensor(frozen, device=layer.module.weight.device)
    w = layer.module.weight
    pairs = [(w, f.view((-1,) + (1,) * (w.dim() - 1)).expand_as(w))]
    if layer.module.bias is not None:
        pairs.append((layer.module.bias, f))
    if layer.norm is not None:
        for t in (layer.norm.weight, layer.norm.bias, layer.norm.running_mean, layer.norm.running_var):
            if t is not None:
                pairs.append((t, f))
    return pairs


class Freezer:
    """Keeps frozen units and old heads bit-for-bit unchanged while a new task trains."""

    def __init__(self, net, ledger, new_head):
        frozen = ledger.frozen()
        self.net, self.entries = net, []
        for layer in net.unit_layers:
            if layer.norm is not None and hasattr(layer.norm, "set_frozen"):
                layer.norm.set_frozen(frozen[layer.name])
            if frozen[layer.name].any():
                for tensor, mask in _param_masks(layer, frozen[layer.name]):
                    self.entries.append((tensor, mask.clone(), tensor.detach().clone()))
        for i, head in enumerate(net.heads):
            head.requires_grad_(i == new_head)

    def trainable(self):
        """The parameters the optimiser may move (frozen entries inside them are restored after each step)."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def before_step(self):
        """Zero the gradients of frozen entries, so the optimiser's state never builds up on them."""
        for tensor, mask, _ in self.entries:
            if isinstance(tensor, torch.nn.Parameter) and tensor.grad is not None:
                tensor.grad.masked_fill_(mask, 0.0)

    @torch.no_grad()
    def after_step(self):
        """Put every frozen entry back as it was (weight decay and momentum would move it)."""
        for tensor, mask, saved in self.entries:
            tensor.copy_(torch.where(mask, saved, tensor))
