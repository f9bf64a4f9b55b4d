"""The ReReLRP learner: add tasks one at a time, predict and explain without the task label.

Configuration goes in the constructor (no work there); ``add_task`` trains, reads unit
relevance, keeps and freezes what the task needs, records relevance features and refits the
task recognisers. Fitted state lives in attributes ending in ``_``. No image of a task is kept
once ``add_task`` returns: the relevance rows in ``store_`` replace replay.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from rerelrp.device import describe_device, resolve_device
from rerelrp.errors import ConfigError
from rerelrp.inputs import random_shift, to_input
from rerelrp.nets import NETS, build_net, grow_layer
from rerelrp.progress import Reporter
from rerelrp.pruning import search_cut
from rerelrp.recognition import RelevanceStore, chain_probabilities, fit_recognizer, in_task_probability
from rerelrp.relevance import COMPOSITES, RelevanceReader, sample_masks, subnetwork_masks
from rerelrp.units import Freezer, UnitLedger


@dataclass
class LearnerConfig:
    """Every setting of a run; saved with it so the run can be repeated."""

    net: str = "vgg"
    input_size: int = 28
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment_shift: int = 2
    acc_drop: float = 1.0
    min_free: float = 0.2
    grow: bool = True
    composite: str = "EpsilonPlusFlat"
    relevance_samples: int = 512
    recognizer_samples: int = 512
    n_features: int = 40
    n_trees: int = 300
    device: str = "auto"
    seed: int = 0

    def validate(self):
        checks = [
            (self.net in NETS, f"net must be one of {', '.join(NETS)}, not '{self.net}'"),
            (self.composite in COMPOSITES, f"composite must be one of {', '.join(COMPOSITES)}, not '{self.composite}'"),
            (8 <= self.input_size <= 512, f"input_size must be 8..512, not {self.input_size}"),
            (self.epochs >= 1, f"epochs must be at least 1, not {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be at least 2, not {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, not {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), not {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, not {self.weight_decay}"),
            (0 <= self.acc_drop <= 100, f"acc_drop is in accuracy points (0..100), not {self.acc_drop}"),
            (0 <= self.min_free < 1, f"min_free is a share of each layer in [0, 1), not {self.min_free}"),
            (self.relevance_samples >= 1, "relevance_samples must be at least 1"),
            (self.recognizer_samples >= 2, "recognizer_samples must be at least 2"),
            (self.n_features >= 1, "n_features must be at least 1"),
            (self.n_trees >= 1, "n_trees must be at least 1"),
            (0 <= self.seed < 2**32, f"seed must be in 0..2**32-1, not {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        resolve_device(self.device)
        return self

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)


@dataclass
class Prediction:
    """Task-agnostic predictions for a batch of images."""

    task: np.ndarray  # (N,) recognised task
    local_class: np.ndarray  # (N,) class inside that task
    global_class: np.ndarray  # (N,) offset of the task + local class
    p_task: np.ndarray  # (N, T) recognition confidence P_T per task
    subnet_class: np.ndarray  # (N, T) the class each sub-network predicts
    class_name: list = field(default_factory=list)


@dataclass
class Explanation:
    """Input heatmaps and most relevant units of every sub-network, with the task-agnostic prediction.

    ``prediction`` equals what :meth:`ReReLRP.predict` returns for the same images under the
    default composite (the recognisers read relevance, so another composite may recognise differently).
    """

    heatmaps: np.ndarray  # (N, T, size, size) input relevance, summed over colour
    subnet_class: np.ndarray  # (N, T) class each sub-network predicts (the LRP start)
    subnet_prob: np.ndarray  # (N, T) softmax probability of that class within its head
    top_units: list  # [n][m] -> list of (layer, unit, relevance), most relevant first
    prediction: Prediction
    composite: str = ""


class TaskSequenceLearner:
    """Bookkeeping every learner of a task sequence shares: settings, learned tasks, class offsets."""

    def __init__(self, **config):
        self.config = LearnerConfig.from_dict(config).validate()
        self.net_ = None
        self.tasks_ = []  # metadata of learned tasks (names, classes, provenance), never images

    @property
    def n_tasks(self):
        return len(self.tasks_)

    @property
    def device(self):
        return resolve_device(self.config.device)

    @property
    def offsets_(self):
        """Global index of each task's first class (and the total at the end)."""
        return np.concatenate([[0], np.cumsum([len(t["classes"]) for t in self.tasks_])]).astype(np.int64)

    @property
    def class_names_(self):
        """Global class names, ``task name: class``."""
        return [f"{t['name']}: {c}" for t in self.tasks_ for c in t["classes"]]

    def describe_device(self):
        return describe_device(self.device)

    def get_params(self):
        return asdict(self.config)


class ReReLRP(TaskSequenceLearner):
    """Replay-free class-incremental learner that remembers and recognises tasks with LRP."""

    max_batch = 512  # rows per stacked pass (samples x sub-networks)

    def __init__(self, **config):
        super().__init__(**config)
        self.ledger_ = None
        self.store_ = None
        self.recognizers_ = []
        self.history_ = []  # one report per learned task

    def _check_fitted(self):
        if not self.tasks_:
            raise ConfigError("no task learned yet: add a task first")

    def _new_net(self, layer_sizes=None, head_sizes=()):
        net = build_net(self.config.net, self.config.input_size, head_sizes, layer_sizes)
        net.input_size = self.config.input_size
        return net.to(self.device)

    def _snapshot(self):
        """Everything add_task may change; one copy per task, restored on stop or error."""
        return (
            copy.deepcopy(self.net_),
            self.ledger_.copy() if self.ledger_ is not None else None,
            self.store_.copy() if self.store_ is not None else None,
            list(self.recognizers_),
            list(self.tasks_),
            list(self.history_),
        )

    def _rollback(self, snap):
        self.net_, self.ledger_, self.store_, self.recognizers_, self.tasks_, self.history_ = snap

    def _grow_saturated(self, t):
        """Add units to every layer whose free share fell below ``min_free`` (dynamic capacity)."""
        if not self.config.grow or t == 0:
            return {}
        deficit = self.ledger_.free_deficit(self.config.min_free)
        layers = {layer.name: layer for layer in self.net_.unit_layers}
        grown = {}
        generator = torch.Generator().manual_seed(self.config.seed * 10007 + t)
        for name, n_new in deficit.items():
            layer = layers[name]
            if not layer.growable:
                continue
            consumer = next((u for u in self.net_.unit_layers if u.module is layer.consumer), None)
            consumer_frozen = self.ledger_.frozen()[consumer.name] if consumer is not None else None
            first_after = self.ledger_.slices[name].stop
            grow_layer(self.net_, name, n_new, consumer_frozen, generator)
            self.ledger_.grow(name, n_new)
            self.store_.shift_units(first_after, n_new)
            grown[name] = n_new
        return grown

    # ------------------------------------------------------------------ learning
    def add_task(self, task, callback=None, stop=None):
        """Learn ``task``; returns its report. On stop or error the learner is left as before."""
        snap = self._snapshot()
        try:
            return self._add_task(task, Reporter(callback, stop, task=self.n_tasks))
        except BaseException:
            self._rollback(snap)
            raise

    def _add_task(self, task, report):
        cfg, t = self.config, self.n_tasks
        if task.n_classes < 2:
            raise ConfigError(f"task '{task.name}' has {task.n_classes} class; a task needs at least 2")
        torch.manual_seed(cfg.seed * 10007 + t)
        if self.net_ is None:
            self.net_ = self._new_net()
            self.ledger_ = UnitLedger(self.net_.layer_sizes)
            self.store_ = RelevanceStore()
        rng = np.random.default_rng([cfg.seed, t])
        grown = self._grow_saturated(t)
        self.net_.add_head(task.n_classes)
        self.tasks_.append(task.describe())
        seconds = {}

        clock = time.perf_counter()
        curve = self._train(task, t, report)
        seconds["train"] = time.perf_counter() - clock

        clock = time.perf_counter()
        scores = self._unit_scores(task, t, rng, report)
        seconds["relevance"] = time.perf_counter() - clock

        clock = time.perf_counter()
        pruned = self._prune(task, t, scores, report)
        self.ledger_.add(pruned.kept)
        seconds["prune"] = time.perf_counter() - clock

        clock = time.perf_counter()
        self._remember(task, t, rng, report)
        seconds["recognizer"] = time.perf_counter() - clock

        capacity = self.capacity()
        summary = {
            "task": t,
            "name": task.name,
            "classes": list(task.class_names),
            "seconds": seconds,
            "grown": grown,
            "train_curve": curve,
            "prune": {
                "val_acc_unpruned": pruned.base_acc,
                "val_acc_kept": pruned.kept_acc,
                "tolerance_points": pruned.tolerance,
                "evaluations": pruned.evaluations,
                "shortfall": pruned.shortfall,
                "kept_units": {name: int(k.sum()) for name, k in self.ledger_.kept[t].items()},
            },
            "stored_bytes": self.store_.nbytes_of_task(t),
            "warnings": self._capacity_warnings(capacity),
        }
        self.history_.append(summary)
        report("done", 1, 1, f"task {t} learned", seconds=seconds)
        return summary

    def _capacity_warnings(self, capacity):
        """Layers below the minimum free share, and whether the next task will grow them."""
        growable = {layer.name: layer.growable for layer in self.net_.unit_layers}
        warnings = []
        for row in capacity:
            if row["free_share"] < self.config.min_free:
                fix = ("it grows before the next task" if self.config.grow and growable[row["layer"]]
                       else "later tasks can only reuse frozen units there")
                warnings.append(f"layer {row['layer']}: {row['free']} of {row['units']} units free "
                                f"({row['free_share']:.0%} < {self.config.min_free:.0%}); {fix}")
        return warnings

    def _train(self, task, t, report):
        cfg, device = self.config, self.device
        net = self.net_
        x = to_input(task.train.images, cfg.input_size).to(device)
        y = torch.as_tensor(task.train.labels, device=device)
        x_val = to_input(task.val.images, cfg.input_size).to(device)
        y_val = torch.as_tensor(task.val.labels)
        lo, hi = self.offsets_[t], self.offsets_[t + 1]
        freezer = Freezer(net, self.ledger_, new_head=t)
        optimizer = torch.optim.SGD(
            freezer.trainable(net), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        steps_per_epoch = max(1, int(np.ceil(len(x) / cfg.batch_size)))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * steps_per_epoch)
        generator = torch.Generator().manual_seed(cfg.seed * 10007 + t)
        curve = []
        for epoch in range(cfg.epochs):
            net.train()
            order = torch.randperm(len(x), generator=generator).to(device)
            total_loss, correct = 0.0, 0
            for step, start in enumerate(range(0, len(x), cfg.batch_size)):
                index = order[start : start + cfg.batch_size]
                if len(index) < 2:  # BatchNorm needs two samples
                    continue
                xb = random_shift(x[index], cfg.augment_shift, generator)
                logits = net(xb)[:, lo:hi]
                loss = F.cross_entropy(logits, y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                freezer.zero_frozen_grads()
                optimizer.step()
                freezer.restore()
                scheduler.step()
                total_loss += float(loss.detach()) * len(index)
                correct += int((logits.argmax(1) == y[index]).sum())
                report("train", epoch * steps_per_epoch + step + 1, cfg.epochs * steps_per_epoch,
                       f"epoch {epoch + 1}/{cfg.epochs}")
            net.eval()
            val_acc = self._accuracy(x_val, y_val, t)
            curve.append({"epoch": epoch + 1, "loss": total_loss / len(x), "train_acc": 100.0 * correct / len(x),
                          "val_acc": val_acc})
            report("train", (epoch + 1) * steps_per_epoch, cfg.epochs * steps_per_epoch,
                   f"epoch {epoch + 1}/{cfg.epochs}: loss {curve[-1]['loss']:.3f}, val acc {val_acc:.1f}%",
                   **curve[-1])
        net.eval()
        return curve

    @torch.no_grad()
    def _head_logits(self, x, t, kept=None):
        """Logits of head t for x, through the full network or the sub-network keeping ``kept``.

        ``kept`` maps layer name to a (1, units) float mask; batches are of fixed size so that
        the same call gives the same bits whenever the weights are the same.
        """
        lo, hi = self.offsets_[t], self.offsets_[t + 1]
        out = []
        for start in range(0, len(x), self.max_batch):
            xb = x[start : start + self.max_batch].to(self.device)
            masks = None if kept is None else {k: m.expand(len(xb), -1) for k, m in kept.items()}
            with subnetwork_masks(self.net_, masks):
                out.append(self.net_(xb)[:, lo:hi].cpu())
        return torch.cat(out) if out else torch.zeros((0, hi - lo))

    def _accuracy(self, x, y, t, kept=None):
        """Accuracy (%) of head t, through the full network or the kept set ``kept``."""
        if len(x) == 0:
            return 0.0
        return 100.0 * float((self._head_logits(x, t, kept).argmax(1) == y).float().mean())

    def _sample(self, split, n, rng):
        """Up to n images of a split, every class represented in proportion (the eval transform)."""
        labels = split.labels
        if len(labels) <= n:
            index = np.arange(len(labels))
        else:
            index = []
            for c in np.unique(labels):
                members = np.flatnonzero(labels == c)
                take = max(1, int(round(n * len(members) / len(labels))))
                index.extend(rng.choice(members, size=min(take, len(members)), replace=False))
            index = np.sort(np.asarray(index))
        return to_input(split.images[index], self.config.input_size), torch.as_tensor(labels[index])

    def _lrp(self, x, groups, targets=None, heatmap=False, composite=None, report=None, phase="", full=False):
        """Batched LRP of x where sample i goes through sub-network ``groups[i]`` and its head.

        ``full=True`` reads every sample through the whole network (all units on) instead.
        """
        offsets = self.offsets_
        group_masks = None if full else self.ledger_.group_masks(range(self.ledger_.n_tasks), self.device)
        logits, starts, units, heats = [], [], [], []
        total = int(np.ceil(len(x) / self.max_batch))
        with RelevanceReader(self.net_, composite or self.config.composite, self.max_batch) as reader:
            for i, start in enumerate(range(0, len(x), self.max_batch)):
                sl = slice(start, start + self.max_batch)
                g = groups[sl].to(self.device)
                masks = None if group_masks is None else sample_masks(group_masks, g)
                res = reader(x[sl].to(self.device), offsets, g, masks,
                             None if targets is None else targets[sl].to(self.device), units=True, heatmap=heatmap)
                logits.append(res.logits)
                starts.append(res.start_class)
                units.append(res.units)
                if heatmap:
                    heats.append(res.heatmap)
                if report:
                    report(phase, i + 1, total, f"LRP batch {i + 1}/{total}")
        cat = lambda parts: torch.cat(parts) if parts else None
        return cat(logits), cat(starts), cat(units), cat(heats) if heatmap else None

    def _unit_scores(self, task, t, rng, report):
        """Relevance size of every unit for task t, LRP started at the true class, full network."""
        x, y = self._sample(task.train, self.config.relevance_samples, rng)
        groups = torch.full((len(x),), t, dtype=torch.long)
        _, _, units, _ = self._lrp(x, groups, targets=y, report=report, phase="relevance", full=True)
        return units.abs().sum(0).numpy()

    def _prune(self, task, t, scores, report):
        x_val = to_input(task.val.images, self.config.input_size)
        y_val = torch.as_tensor(task.val.labels)
        slices = self.ledger_.slices

        def evaluate(kept):
            masks = {name: torch.tensor(kept[sl], dtype=torch.float32, device=self.device)[None]
                     for name, sl in slices.items()}
            return self._accuracy(x_val, y_val, t, masks)

        frozen = self.ledger_.flat(self.ledger_.frozen())

        def on_step(i, dropped, acc):
            report("prune", i, int(np.ceil(np.log2(len(scores) + 1))) + 2,
                   f"dropping {dropped} of {len(scores)} units: val acc {acc:.1f}%", dropped=dropped, val_acc=acc)

        return search_cut(scores, frozen, slices, evaluate, self.config.acc_drop, len(y_val), self.config.min_free,
                          on_step)

    def _remember(self, task, t, rng, report):
        """Relevance rows of task t through every sub-network so far, then refit the recognisers."""
        x, _ = self._sample(task.train, self.config.recognizer_samples, rng)
        n = len(x)
        groups = torch.arange(t + 1).repeat_interleave(n)
        _, _, units, _ = self._lrp(x.repeat(t + 1, 1, 1, 1), groups, report=report, phase="recognizer")
        units = units.numpy().reshape(t + 1, n, -1)
        self.store_.add_task(t, units[t], self.config.n_features)
        for m in range(t):
            self.store_.add_ood(m, t, units[m])
        recognizers = []
        for m in range(t):
            X, y = self.store_.training_set(m)
            report("recognizer", m + 1, t, f"fitting recogniser of task {m} on {len(y)} rows")
            recognizers.append(fit_recognizer(X, y, self.config.n_trees, seed=self.config.seed * 7919 + m))
        self.recognizers_ = recognizers

    # ------------------------------------------------------------------ using the model
    def _stacked(self, images, heatmap=False, composite=None):
        """Every image through every sub-network in stacked batches.

        Returns each sub-network's class (N, T), logits (N, T, k), unit relevance (N, T, U) and,
        with ``heatmap``, input relevance (N, T, H, W). Without heatmaps the newest sub-network
        only needs its forward pass (it has no recogniser), so it skips LRP.
        """
        self._check_fitted()
        T = self.n_tasks
        lrp_tasks = T if heatmap else T - 1
        x = to_input(images, self.config.input_size)
        per_chunk = max(1, self.max_batch // max(lrp_tasks, 1))
        starts, logits, units, heats = [], [], [], []
        for start in range(0, len(x), per_chunk):
            xb = x[start : start + per_chunk]
            n = len(xb)
            lg = st = un = None
            if lrp_tasks:
                groups = torch.arange(lrp_tasks).repeat_interleave(n)
                lg, st, un, ht = self._lrp(xb.repeat(lrp_tasks, 1, 1, 1), groups, heatmap=heatmap, composite=composite)
                lg, st, un = lg.view(lrp_tasks, n, -1), st.view(lrp_tasks, n), un.view(lrp_tasks, n, -1)
            if lrp_tasks < T:
                newest = self._head_logits(xb, T - 1, self.ledger_.group_masks([T - 1], self.device))[None]
                no_units = torch.zeros((1, n, self.ledger_.n_units))
                if lg is None:
                    lg, st, un = newest, newest.argmax(-1), no_units
                else:
                    width = max(lg.shape[-1], newest.shape[-1])
                    pad = lambda a: F.pad(a, (0, width - a.shape[-1]), value=float("-inf"))
                    lg, st, un = torch.cat([pad(lg), pad(newest)]), torch.cat([st, newest.argmax(-1)]), torch.cat([un, no_units])
            starts.append(st.T)
            logits.append(lg.transpose(0, 1))
            units.append(un.transpose(0, 1))
            if heatmap:
                heats.append(ht.view(T, n, *ht.shape[1:]).transpose(0, 1))
        width = max(part.shape[-1] for part in logits)
        logits = [F.pad(part, (0, width - part.shape[-1]), value=float("-inf")) for part in logits]
        return (torch.cat(starts).numpy(), torch.cat(logits), torch.cat(units).numpy(),
                torch.cat(heats).numpy() if heatmap else None)

    def _recognise(self, units):
        """P_T for (N, T, U) unit relevance through each sub-network."""
        T = self.n_tasks
        p_r = np.stack(
            [in_task_probability(self.recognizers_[m], units[:, m, self.store_.features[m]]) for m in range(T - 1)],
            axis=1,
        ) if T > 1 else np.zeros((len(units), 0))
        return chain_probabilities(p_r)

    def _predict_from(self, subnet_class, units):
        p_task = self._recognise(units)
        task = p_task.argmax(1)
        local = subnet_class[np.arange(len(task)), task]
        glob = self.offsets_[task] + local
        names = self.class_names_
        return Prediction(task, local, glob, p_task, subnet_class, [names[g] for g in glob])

    def predict(self, images):
        """Task-agnostic prediction: recognise the task with the chain, then its sub-network's class."""
        subnet_class, _, units, _ = self._stacked(images)
        return self._predict_from(subnet_class, units)

    def explain(self, images, composite=None, top_k=5):
        """Input heatmaps of every sub-network, each started at its own predicted class, plus the
        prediction, all from one LRP pass."""
        subnet_class, logits, units, heats = self._stacked(images, heatmap=True, composite=composite)
        prob = torch.softmax(logits, -1).gather(-1, torch.as_tensor(subnet_class)[..., None])[..., 0].numpy()
        names = list(self.ledger_.layer_sizes)
        first_unit = np.cumsum([0] + [self.ledger_.layer_sizes[n] for n in names])
        top = []
        for i in range(len(units)):
            per_task = []
            for m in range(self.n_tasks):
                layer_of = np.searchsorted(first_unit, np.argsort(-units[i, m])[:top_k], "right") - 1
                per_task.append([(names[li], int(u - first_unit[li]), float(units[i, m, u]))
                                 for li, u in zip(layer_of, np.argsort(-units[i, m])[:top_k])])
            top.append(per_task)
        return Explanation(heats, subnet_class, prob, top, self._predict_from(subnet_class, units),
                           composite or self.config.composite)

    def subnetwork_logits(self, images, task):
        """Logits of sub-network ``task`` through its own head (what task-aware accuracy reads)."""
        self._check_fitted()
        return self._head_logits(to_input(images, self.config.input_size), task,
                                 self.ledger_.group_masks([task], self.device))

    def capacity(self):
        """Per layer: units kept by each task, shared, free (see :meth:`UnitLedger.capacity`)."""
        if self.ledger_ is None:
            return []
        return self.ledger_.capacity(warn_below=self.config.min_free)
