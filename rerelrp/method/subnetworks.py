"""Images through sub-networks: forward passes and batched LRP, every sub-network in one stacked pass.

A sub-network is the shared network with every unit its task did not keep switched off, read
through its task's head. Forward passes go through each sub-network's compact form
(:mod:`rerelrp.model.compact`: its kept units alone) where the body allows; LRP, and bodies that
cannot be sliced, use per-sample unit masks, so that one batch holds several sub-networks and
predicting for T tasks costs one LRP pass, not T. :class:`Subnetworks` is a short-lived view of a
learner's network, unit ledger and class offsets; it owns nothing but an optional cache of compact
sub-networks its owner empties. What the passes mean (P_T, the answer, the scope score,
explanations) is :mod:`rerelrp.method.predictor`'s.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rerelrp.lrp.relevance import LrpResult, RelevanceReader, sample_masks, unit_activation
from rerelrp.method.recognition import signals
from rerelrp.method.scope import scope_statistics
from rerelrp.model.batching import rows_per_pass
from rerelrp.model.compact import compact
from rerelrp.model.inputs import LazyInputs
from rerelrp.model.units import layer_starts


def _pad_to(part, width):
    return F.pad(part, (0, width - part.shape[-1]), value=float("-inf"))


class Subnetworks:
    """Runs images through the sub-networks of a network, its unit ledger and its class offsets."""

    def __init__(self, net, ledger, offsets, composite, device, cache=None):
        self.net, self.ledger, self.offsets = net, ledger, offsets
        self.composite, self.device = composite, device
        self.cache = cache  # task -> its compact sub-network, kept by an owner who empties it when weights change
        self.batch = rows_per_pass(net.input_size)

    @property
    def n_tasks(self):
        return len(self.offsets) - 1

    @torch.no_grad()
    def head_logits(self, x, t, kept=None):
        """Logits of head t for x, through the full network or the sub-network keeping ``kept``.

        ``kept`` maps layer name to a (1, units) float mask; batches are of fixed size so that
        the same call gives the same bits whenever the weights are the same.
        """
        return self._passes(x, t, kept, signals=False)[0]

    def _passes(self, x, t, kept, signals=True):
        """Logits of head t and unit activations (n, U) of x through the kept set ``kept`` (None: all
        units; empty without ``signals``), in batches of fixed size: by the compact sub-network where the body allows."""
        lo, hi = self.offsets[t], self.offsets[t + 1]
        small = None if kept is None else compact(self.net, {k: m[0] > 0 for k, m in kept.items()}, t)
        logits, acts = [], []
        for start in range(0, len(x), self.batch):
            xb = x[start : start + self.batch].to(self.device)
            if small is not None:
                lg, ac = small(xb)
                logits.append(lg.cpu()), acts.append(ac.cpu())
                continue
            masks = None if kept is None else {k: m.expand(len(xb), -1) for k, m in kept.items()}
            with self.net.unit_outputs(reduce=unit_activation) as stored, self.net.subnetworks(masks):
                logits.append(self.net(xb)[:, lo:hi].cpu())
                if signals:
                    acts.append(torch.cat([stored[layer.name].cpu() for layer in self.net.unit_layers], 1))
        if not logits or not acts:
            return (torch.cat(logits) if logits else torch.zeros((0, hi - lo))), torch.zeros((0, self.ledger.n_units))
        return torch.cat(logits), torch.cat(acts)

    def accuracy(self, x, y, t, kept=None):
        """Accuracy (%) of head t, through the full network or the kept set ``kept``."""
        if len(x) == 0:
            return 0.0
        return 100.0 * float((self.head_logits(x, t, kept).argmax(1) == y).float().mean())

    def scores(self, x, y, t, kept=None):
        """Validation accuracy (%) and mean cross-entropy of head t (what the best epoch is chosen by)."""
        if len(x) == 0:
            return {"val_acc": 0.0, "val_loss": 0.0}
        logits = self.head_logits(x, t, kept)
        return {"val_acc": 100.0 * float((logits.argmax(1) == y).float().mean()),
                "val_loss": float(F.cross_entropy(logits, y))}

    @torch.no_grad()
    def forward_signals(self, x, t):
        """Logits of sub-network t and the activation of every unit (N, U), from a plain forward pass.

        The newest sub-network needs no LRP (it has no recogniser), but the scope check reads its
        activations; they equal what an LRP pass reads (:func:`~rerelrp.lrp.relevance.unit_activation`).
        """
        return self._passes(x, t, self.ledger.group_masks([t], self.device))

    @torch.no_grad()
    def forward_stacked(self, x, tasks):
        """Logits (len(tasks), n, k: -inf padded) and unit activations (len(tasks), n, U) of a batch ``x``
        through each sub-network of ``tasks`` (no LRP): each by its compact form, or all in one masked pass."""
        tasks, n = list(tasks), len(x)
        small = [self._compact(t) for t in tasks]
        width = max(self.offsets[t + 1] - self.offsets[t] for t in tasks)
        logits = torch.full((len(tasks), n, width), float("-inf"))
        if all(s is not None for s in small):  # each sub-network at the cost of its own units
            acts = []
            for i, s in enumerate(small):
                lg, ac = s(x.to(self.device))
                logits[i, :, : lg.shape[1]] = lg.cpu()
                acts.append(ac.cpu())
            return logits, torch.stack(acts)
        index = torch.arange(len(tasks), device=self.device).repeat_interleave(n)
        masks = sample_masks(self.ledger.group_masks(tasks, self.device), index)
        with self.net.unit_outputs(reduce=unit_activation) as stored, self.net.subnetworks(masks):
            out = self.net(x.repeat(len(tasks), 1, 1, 1).to(self.device)).cpu()
            acts = torch.cat([stored[layer.name].cpu() for layer in self.net.unit_layers], 1)
        for i, t in enumerate(tasks):
            lo, hi = self.offsets[t], self.offsets[t + 1]
            logits[i, :, : hi - lo] = out[i * n : (i + 1) * n, lo:hi]
        return logits, acts.view(len(tasks), n, -1)

    def _compact(self, t):
        """Sub-network t as a :class:`~rerelrp.model.compact.CompactNet` (None: the body has none), from the cache."""
        small = None if self.cache is None else self.cache.get(t)
        if small is None:
            small = compact(self.net, {k: torch.as_tensor(m[t]) for k, m in self.ledger.kept.items()}, t)
            if self.cache is not None and small is not None:
                self.cache[t] = small
        return small

    def subnetwork_logits(self, x, t):
        return self.head_logits(x, t, self.ledger.group_masks([t], self.device))

    def lrp(self, x, groups, targets=None, heatmap=False, composite=None, report=None, phase="", full=False, rows=None):
        """Batched LRP of x where sample i goes through sub-network ``groups[i]`` and its head.

        ``full=True`` reads every sample through the whole network (all units on) instead.
        ``rows`` (a LongTensor) reads sample i from ``x[rows[i]]``: one image through several
        sub-networks without copying it (2,048 images at 128 px are 0.4 GB per copy).
        Returns one :class:`~rerelrp.lrp.relevance.LrpResult` for all of x (heatmaps only with ``heatmap``).
        """
        group_masks = None if full else self.ledger.group_masks(range(self.ledger.n_tasks), self.device)
        parts = []
        n = len(groups)
        total = int(np.ceil(n / self.batch))
        with RelevanceReader(self.net, composite or self.composite, self.batch) as reader:
            for i, start in enumerate(range(0, n, self.batch)):
                sl = slice(start, start + self.batch)
                g = groups[sl].to(self.device)
                masks = None if group_masks is None else sample_masks(group_masks, g)
                xb = x[sl] if rows is None else x[rows[sl]]
                parts.append(reader(xb.to(self.device), self.offsets, g, masks,
                                    None if targets is None else targets[sl].to(self.device), heatmap=heatmap))
                if report:
                    report(phase, i + 1, total, f"LRP batch {i + 1}/{total}")

        def cat(name):
            values = [getattr(p, name) for p in parts]
            return torch.cat(values) if values and values[0] is not None else None

        return LrpResult(cat("logits"), cat("start_class"), cat("units"), cat("heatmap"), cat("layer_norms"),
                         cat("activations"))

    def stacked(self, images, input_size, heatmap=False, composite=None, memo=None, relevance=True):
        """Every image through every sub-network in stacked batches.

        Returns each sub-network's class (N, T), logits (N, T, k), unit signals (N, T, 2U: relevance,
        then activations; see :func:`~rerelrp.method.recognition.signals`) and, with ``heatmap``, input
        relevance (N, T, H, W). Without heatmaps the newest sub-network
        only needs its forward pass (it has no recogniser), so it skips LRP; with ``relevance=False``
        (recognisers that read activations only) every sub-network does, and the relevance columns are zero.

        ``memo`` (a dict the caller keeps for one set of images, empty at first; not with
        ``heatmap``) carries results from call to call: a sub-network's units are frozen once its
        task is learned, so the same images give it the same results, and a later call runs only
        the sub-networks it has not seen (testing after each task: 40 % fewer LRP rows on
        BloodMNIST 4x2). Rows with relevance and forward-only rows are never mixed.
        """
        T = self.n_tasks
        lrp_tasks = T if heatmap else T - 1 if relevance else 0
        kept = lrp_tasks if relevance or heatmap else T  # the sub-networks whose rows a memo may keep
        x = LazyInputs(images, input_size)
        memo = None if heatmap or not kept else memo
        known = 0 if memo is None else memo.get("tasks", 0)
        if known and (known > kept or memo["relevance"] != relevance or len(memo["starts"]) != len(x)):
            known = 0  # not this learner's memo for these images: start afresh
        first_forward = max(lrp_tasks, known)
        per_chunk = max(1, self.batch // max(lrp_tasks - known, T - first_forward, 1))
        starts, logits, units, heats = [], [], [], []
        for start in range(0, len(x), per_chunk):
            xb = x[start : start + per_chunk]
            n = len(xb)
            lg = st = un = None
            if lrp_tasks > known:
                fresh = lrp_tasks - known
                groups = torch.arange(known, lrp_tasks).repeat_interleave(n)
                res = self.lrp(xb.repeat(fresh, 1, 1, 1), groups, heatmap=heatmap, composite=composite)
                lg, st, un, ht = res.logits, res.start_class, torch.from_numpy(signals(res)), res.heatmap
                lg, st, un = lg.view(fresh, n, -1), st.view(fresh, n), un.view(fresh, n, -1)
            if first_forward < T:
                forward, acts = self.forward_stacked(xb, range(first_forward, T))
                no_units = torch.cat([torch.zeros(acts.shape), acts], -1)
                if lg is None:
                    lg, st, un = forward, forward.argmax(-1), no_units
                else:
                    width = max(lg.shape[-1], forward.shape[-1])
                    lg = torch.cat([_pad_to(lg, width), _pad_to(forward, width)])
                    st, un = torch.cat([st, forward.argmax(-1)]), torch.cat([un, no_units])
            starts.append(st.T)
            logits.append(lg.transpose(0, 1))
            units.append(un.transpose(0, 1))
            if heatmap:
                heats.append(ht.view(T, n, *ht.shape[1:]).transpose(0, 1))
        starts, units = torch.cat(starts), torch.cat(units)
        width = max(part.shape[-1] for part in logits)
        logits = torch.cat([_pad_to(part, width) for part in logits])
        if memo is not None and not heatmap:
            starts, logits, units = self._remembered(memo, known, kept, relevance, starts, logits, units)
        return (starts.numpy(), logits, units.numpy(), torch.cat(heats).numpy() if heatmap else None,
                scope_statistics(x))

    def _remembered(self, memo, known, kept, relevance, starts, logits, units):
        """Put the ``known`` sub-networks' results of ``memo`` before this call's, then remember the
        first ``kept`` (with ``relevance``, the newest sub-network's forward-only rows have none yet).

        Units are numbered layer by layer, so a layer that grew since moves the columns of the
        layers after it: remembered signals are placed at their units' current columns (the units
        a sub-network did not keep, new ones included, are zero and read by nothing). Without
        ``relevance`` only the activations are remembered (the relevance half is zero).
        """
        if known:
            place = np.concatenate([np.arange(n) + start for n, start in
                                    zip(memo["sizes"].values(), layer_starts(self.ledger.layer_sizes))])
            place = np.concatenate([place, self.ledger.n_units + place]) if relevance else self.ledger.n_units + place
            old = torch.zeros(memo["units"].shape[:2] + (units.shape[-1],))
            old[..., place] = memo["units"]
            width = max(logits.shape[-1], memo["logits"].shape[-1])
            starts = torch.cat([memo["starts"], starts], 1)
            logits = torch.cat([_pad_to(memo["logits"], width), _pad_to(logits, width)], 1)
            units = torch.cat([old, units], 1)
        memo.update(tasks=kept, relevance=relevance, sizes=dict(self.ledger.layer_sizes), starts=starts[:, :kept].clone(),
                    logits=logits[:, :kept].clone(), units=units[:, :kept, 0 if relevance else self.ledger.n_units :].clone())
        return starts, logits, units
