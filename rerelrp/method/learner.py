"""The ReReLRP learner: add tasks one at a time, predict and explain without the task label.

``add_task`` trains, reads unit relevance, keeps and freezes what the task needs, records
relevance features and refits the task recognisers. Fitted state lives in the attributes
ending in ``_`` and nowhere else: :meth:`ReReLRP.export_state` hands all of it out (a workspace
saves exactly that) and :meth:`ReReLRP.from_state` rebuilds a learner from it. No image of a
task is kept once ``add_task`` returns: the relevance rows in ``store_`` replace replay.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from rerelrp.device import flush_denormals, resolve_device
from rerelrp.errors import ConfigError
from rerelrp.method.base import Prediction, TaskSequenceLearner
from rerelrp.method.fitted_state import rebuild
from rerelrp.method.predictor import Explanation, Predictor
from rerelrp.method.pruning import search_cut
from rerelrp.method.remembering import new_store, recognition, remember_rows, remember_statistics
from rerelrp.method.room import make_room, room_needed, tune_without
from rerelrp.method.subnetworks import Subnetworks
from rerelrp.method.task_report import TaskReport
from rerelrp.method.temperature import check_temperature
from rerelrp.method.training import Schedule, class_weights, head_loss, recalibrate_batchnorm, recalibrate_if_better, train
from rerelrp.model.growth import grow_layer
from rerelrp.model.inputs import ImageSource, LazyInputs
from rerelrp.model.units import Freezer, UnitLedger
from rerelrp.progress import Reporter

SEARCH_RECALIBRATION = 512  # training images that give each candidate cut its BatchNorm statistics (2048 after)

__all__ = ["Explanation", "Prediction", "ReReLRP"]


@dataclass
class Trained:
    """What training one task hands to the steps after it (never kept on the learner)."""

    curve: list  # one dict per epoch
    freezer: Freezer  # keeps old units exact while BatchNorm statistics are recomputed
    recalibrated: bool  # BatchNorm statistics were recomputed on training images (pruning does the same)


class ReReLRP(TaskSequenceLearner):
    """Replay-free class-incremental learner that remembers and recognises tasks with LRP."""

    # ------------------------------------------------------------------ learning
    def add_task(self, task, callback=None, stop=None):
        """Learn ``task``; returns self (its report is ``history_[-1]``). On stop or error nothing changes."""
        self.check_params()
        self._check_task(task)
        snapshot = self.export_state() if self.n_tasks else None
        self.compact_ = {}  # the weights are about to change: no compact sub-network of them is kept
        try:
            with flush_denormals():
                self._add_task(task, Reporter(callback, stop, task=self.n_tasks))
        except BaseException:
            self._restore(snapshot)
            raise
        finally:
            self.compact_ = {}
        return self

    def _add_task(self, task, report):
        t = self.n_tasks
        torch.manual_seed(self.task_seed(t))
        if not t:
            self._begin(task)
            self.ledger_, self.store_, self.recognizers_ = UnitLedger(self.net_.layer_sizes), new_store(self.recognizer), []
        rng = np.random.default_rng([self.seed, t])
        self.p_task_temperature_ = 1.0  # fitted for the tasks before this one: raw P_T until the run fits it again
        grown = self._grow(t)
        self.net_.add_head(task.n_classes)
        self.tasks_.append(task.describe())
        seconds = {}

        clock = time.perf_counter()
        trained = self._train(task, t, report)
        val_full, learned_nothing = self._check_learned(task, t)
        if learned_nothing:
            report("warning", 1, 1, learned_nothing)
        seconds["train"] = time.perf_counter() - clock

        clock = time.perf_counter()
        scores = self._unit_scores(task, t, rng, report)
        seconds["relevance"] = time.perf_counter() - clock

        clock = time.perf_counter()
        pruned = self._prune(task, t, scores, rng, report, trained)
        kept_acc = self._settle(task, t, pruned.kept, trained)
        self.ledger_.add(pruned.kept)
        seconds["prune"] = time.perf_counter() - clock

        clock = time.perf_counter()
        self._remember(task, t, rng, report)
        seconds["recognizer"] = time.perf_counter() - clock

        params = self.get_params()
        self.history_.append(TaskReport(
            task=t, name=task.name, classes=list(task.class_names), seconds=seconds, train_curve=trained.curve,
            settings=params, schedule=Schedule.of(params).plan(len(task.train)), stored_bytes=self.store_.nbytes_of_task(t),
            grown=grown, recalibrated=trained.recalibrated,
            prune={
                "val_acc_full": val_full,
                "val_acc_kept": kept_acc,
                "search_images": pruned.n_images,
                "search_acc_full": pruned.base_acc,
                "search_acc_kept": pruned.kept_acc,
                "tolerance_points": pruned.tolerance,
                "evaluations": pruned.evaluations,
                "shortfall": pruned.shortfall,
                "room": pruned.room,
                "kept_units": {name: int(k.sum()) for name, k in self.ledger_.task(t).items()},
            },
            warnings=([learned_nothing] if learned_nothing else []) + self._capacity_warnings(self.capacity())))
        report("done", 1, 1, f"task {t} learned", seconds=seconds)

    def _grow(self, t):
        """Add units to every layer whose free share fell below ``min_free`` (dynamic capacity).

        The network and the ledger grow together here, and only here.
        """
        if not self.grow or t == 0:
            return {}
        layers = {layer.name: layer for layer in self.net_.unit_layers}
        grown = {}
        generator = torch.Generator().manual_seed(self.task_seed(t))
        for name, n_new in self.ledger_.free_deficit(self.min_free).items():
            layer = layers[name]
            if not layer.growable:
                continue
            consumer = next((u for u in self.net_.unit_layers if u.module is layer.consumer), None)
            consumer_frozen = self.ledger_.frozen()[consumer.name] if consumer is not None else None
            grow_layer(self.net_, name, n_new, consumer_frozen, generator)
            self.ledger_.grow(name, n_new)
            grown[name] = n_new
        return grown

    def _capacity_warnings(self, capacity):
        """Layers below the minimum free share, and whether the next task will grow them."""
        growable = {layer.name: layer.growable for layer in self.net_.unit_layers}
        warnings = []
        for row in capacity:
            if row["free_share"] < self.min_free:
                fix = ("it grows before the next task" if self.grow and growable[row["layer"]]
                       else "later tasks can only reuse frozen units there")
                warnings.append(f"layer {row['layer']}: {row['free']} of {row['units']} units free "
                                f"({row['free_share']:.0%} < {self.min_free:.0%}); {fix}")
        return warnings

    def _subnetworks(self, cache=None):
        return Subnetworks(self.net_, self.ledger_, self.offsets_, self.composite, self.device_, cache)

    def _predictor(self):
        """The predictor of the fitted state; its compact sub-networks are kept until the weights change."""
        sub = self._subnetworks(self.compact_)
        return Predictor(sub, self.input_size_, recognition(self.recognizer, self.store_, self.recognizers_),
                         self.class_names_, self.scope_rate, self.p_task_temperature_)

    def _train(self, task, t, report):
        device = self.device_
        lo, hi = self.offsets_[t], self.offsets_[t + 1]
        source = ImageSource([task.train.images], self.input_size_, device)
        labels = torch.as_tensor(task.train.labels, device=device)
        x_val = LazyInputs(task.val.images, self.input_size_)
        y_val = torch.as_tensor(task.val.labels)
        freezer = Freezer(self.net_, self.ledger_, new_head=t)
        subnets = self._subnetworks()
        generator = torch.Generator().manual_seed(self.task_seed(t))
        weights = class_weights(task.train.labels, task.n_classes) if self.class_balance else None
        curve = train(self.net_, freezer.trainable(), source, labels, Schedule.of(self.get_params()),
                      head_loss(slice(lo, hi), weights), generator, report, hooks=freezer,
                      validate=lambda: subnets.scores(x_val, y_val, t))
        recalibrated = self.recalibrate and recalibrate_if_better(
            self.net_, source, freezer, generator, lambda: subnets.scores(x_val, y_val, t))
        return Trained(curve, freezer, bool(recalibrated))

    def _check_learned(self, task, t):
        """Validation accuracy of the trained network, and a warning if it is no better than guessing.

        Balanced accuracy (mean recall over classes) is what is compared with chance: on 28 CT
        against 150 MR, calling everything MR scores 84 % plain accuracy and 50 % balanced.
        """
        x_val = LazyInputs(task.val.images, self.input_size_)
        predicted = self._subnetworks().head_logits(x_val, t).argmax(1).numpy()
        y, k = task.val.labels, task.n_classes
        recalls = [np.mean(predicted[y == c] == c) for c in range(k) if np.any(y == c)]
        balanced = 100.0 * float(np.mean(recalls)) if recalls else 0.0
        accuracy = 100.0 * float(np.mean(predicted == y)) if len(y) else 0.0
        if len(y) and balanced <= 100.0 / k + 10.0:
            return accuracy, (
                f"task {t} ({task.name}) learned nothing: balanced validation accuracy {balanced:.1f} % is within "
                f"10 points of chance ({100.0 / k:.1f} %) on {len(y)} validation images; its units are frozen "
                "anyway. Train longer (epochs, min_steps), check the labels, or add images")
        return accuracy, None

    def _settle(self, task, t, kept_flat, trained):
        """BatchNorm statistics of task t's pruned sub-network, from its own activations; its validation accuracy."""
        masks = self._masks(kept_flat)
        if trained.recalibrated:
            source = ImageSource([task.train.images], self.input_size_, self.device_)
            generator = torch.Generator().manual_seed(self.task_seed(t))
            recalibrate_batchnorm(self.net_, source, trained.freezer, masks=masks, generator=generator)
        x_val, y_val = LazyInputs(task.val.images, self.input_size_), torch.as_tensor(task.val.labels)
        return self._subnetworks().accuracy(x_val, y_val, t, masks)

    def _sample(self, split, n, rng):
        """Up to n images of a split, every class represented in proportion (the eval transform).

        Not :func:`~rerelrp.data.core.stratified_holdout`: this rounds n x class share (at least 1) and draws with
        ``rng.choice`` from the task's running generator; one sampler for both would change every run's images.
        """
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
        return LazyInputs(split.images[index], self.input_size_), torch.as_tensor(labels[index])

    def _unit_scores(self, task, t, rng, report):
        """Relevance size of every unit for task t, LRP started at the true class, full network."""
        x, y = self._sample(task.train, self.relevance_samples, rng)
        groups = torch.full((len(x),), t, dtype=torch.long)
        units = self._subnetworks().lrp(x, groups, targets=y, report=report, phase="relevance", full=True).units
        return units.abs().sum(0).numpy()

    def _prune(self, task, t, scores, rng, report, trained):
        """The kept set of task t, judged on at least ``prune_samples`` images: the validation images,
        topped up with training images when there are fewer, so that 27 validation images do not
        decide alone (training images flatter a cut, so a large validation split decides alone)."""
        x_eval, y_eval = LazyInputs(task.val.images, self.input_size_), torch.as_tensor(task.val.labels)
        top_up = self.prune_samples - len(y_eval)
        if top_up > 0:
            x_train, y_train = self._sample(task.train, top_up, rng)
            x_eval, y_eval = LazyInputs.cat([x_eval, x_train]), torch.cat([y_eval, y_train])
        slices, subnets = self.ledger_.slices, self._subnetworks()
        source = ImageSource([task.train.images], self.input_size_, self.device_)

        def evaluate(kept):
            masks = self._masks(kept)
            if trained.recalibrated:  # judge each candidate with its own BatchNorm statistics, as it will be used
                generator = torch.Generator().manual_seed(self.task_seed(t))  # the same images for every cut
                recalibrate_batchnorm(self.net_, source, trained.freezer, masks=masks, generator=generator,
                                      limit=SEARCH_RECALIBRATION)
            return subnets.accuracy(x_eval, y_eval, t, masks)

        frozen = self.ledger_.flat(self.ledger_.frozen())

        def on_step(i, dropped, acc):
            report("prune", i, int(np.ceil(np.log2(len(scores) + 1))) + 2,
                   f"dropping {dropped} of {len(scores)} units: accuracy {acc:.1f}%", dropped=dropped, acc=acc)

        pruned = search_cut(scores, frozen, slices, evaluate, self.acc_drop, len(y_eval), self.min_free, on_step)
        if self.room_steps and room_needed(pruned):
            pruned = make_room(self.net_, pruned, scores, frozen, slices, self.min_free,
                               lambda kept: self._tune_without(task, t, kept, trained, report), evaluate)
        return pruned

    def _tune_without(self, task, t, kept, trained, report):
        """Fine-tune task t for ``room_steps`` steps with only ``kept`` units (see :mod:`rerelrp.method.room`)."""
        masks, lo, hi = self._masks(kept), self.offsets_[t], self.offsets_[t + 1]
        weights = class_weights(task.train.labels, task.n_classes) if self.class_balance else None
        x_val, y_val = LazyInputs(task.val.images, self.input_size_), torch.as_tensor(task.val.labels)
        schedule, subnets = replace(Schedule.of(self.get_params()), epochs=1, min_steps=self.room_steps), self._subnetworks()
        return tune_without(
            self.net_, trained.freezer, ImageSource([task.train.images], self.input_size_, self.device_),
            torch.as_tensor(task.train.labels, device=self.device_), schedule, head_loss(slice(lo, hi), weights),
            masks, torch.Generator().manual_seed(self.task_seed(t) + 1), lambda: subnets.scores(x_val, y_val, t, masks),
            lambda phase, step, total, message="", **_: report("prune", step, total, f"making room: {message}"))

    def _masks(self, kept_flat):
        """Per layer a (1, units) float mask of the units ``kept_flat`` keeps, on the learner's device."""
        return {name: torch.tensor(k, dtype=torch.float32, device=self.device_)[None]
                for name, k in self.ledger_.unflat(kept_flat).items()}

    def _remember(self, task, t, rng, report):
        """What task t leaves for recognising it later (see :mod:`rerelrp.method.remembering`)."""
        sub = self._subnetworks({})  # the weights stay as they are until the task ends: compact them once
        if self.recognizer == "gaussian":
            remember_statistics(self.store_, sub, task, t, self.input_size_, report)
            self.recognizers_ = []
        else:
            x, _ = self._sample(task.train, self.recognizer_samples, rng)
            self.recognizers_ = remember_rows(self.store_, sub, x, task, t, self.input_size_, report, self.n_features,
                                              self.activation_features, self.n_trees, self.seed)

    # ------------------------------------------------------------------ using the model
    def predict(self, images, memo=None):
        """Task-agnostic prediction: recognise the task with the chain, then its sub-network's class.

        ``memo``: a dict kept by the caller for these images, so that predicting them again after
        later tasks reuses the LRP of the sub-networks it has seen (see ``Subnetworks.stacked``)."""
        self._check_fitted()
        with flush_denormals():
            return self._predictor().predict(images, memo=memo)

    def explain(self, images, composite=None, top_k=5):
        """Input heatmaps of every sub-network, each started at its own predicted class, plus the
        prediction, all from one LRP pass."""
        self._check_fitted()
        with flush_denormals():
            return self._predictor().explain(images, composite or self.composite, top_k)

    def subnetwork_logits(self, images, task):
        """Logits of sub-network ``task`` through its own head (what task-aware accuracy reads)."""
        self._check_fitted()
        return self._subnetworks().subnetwork_logits(LazyInputs(images, self.input_size_), task)

    def set_p_task_temperature(self, temperature):
        """Temper P_T by ``temperature`` (see :mod:`rerelrp.method.temperature`; 1: raw) until the next task."""
        self._check_fitted()
        self.p_task_temperature_ = check_temperature(temperature)

    def capacity(self):
        """Per layer: units kept by each task, shared, free (see :meth:`UnitLedger.capacity`)."""
        if not self.n_tasks:
            return []
        return self.ledger_.capacity(warn_below=self.min_free)

    # ------------------------------------------------------------------ fitted state
    def export_state(self):
        """Everything fitted, as copies: ``params`` and ``meta`` (JSON values), ``tensors`` (the
        network), ``arrays`` (kept sets, relevance rows) and ``estimators`` (the recognisers)."""
        self._check_fitted()
        layer_sizes = self.ledger_.layer_sizes
        if self.net_.layer_sizes != layer_sizes:
            raise ConfigError("the network's layer sizes disagree with its unit ledger; the learner is in an "
                              "inconsistent state (was a task interrupted?)")
        arrays = {f"kept/{name}": k.copy() for name, k in self.ledger_.kept.items()}
        arrays.update({k: v.copy() for k, v in self.store_.to_arrays().items()})
        return {
            "params": self.get_params(),
            "meta": {
                "arch": self.net_.arch,
                "input_size": self.net_.input_size,
                "layer_sizes": [[name, int(n)] for name, n in layer_sizes.items()],
                "head_sizes": [len(t["classes"]) for t in self.tasks_],
                "input_blocks": self.net_.input_blocks(),
                "tasks": list(self.tasks_),
                "history": [report.to_dict() for report in self.history_],
                "p_task_temperature": self.p_task_temperature_,
            },
            "tensors": {k: v.detach().to("cpu").clone().contiguous() for k, v in self.net_.state_dict().items()},
            "arrays": arrays,
            "estimators": {f"recognizer-{m:03d}": forest for m, forest in enumerate(self.recognizers_)},
        }

    @classmethod
    def from_state(cls, state, device=None):
        """A learner from :meth:`export_state`'s output; ``device`` overrides the saved device setting.

        Raises :class:`ConfigError` naming the part of the state that does not fit.
        """
        params = dict(state.get("params") or {})
        params.setdefault("recognizer", "forest")  # saved before the Gaussian recognisers: forests, kept as they were
        if device is not None:
            params["device"] = device
        learner = cls(**params).check_params()
        learner._restore(state)
        return learner

    def _restore(self, state):
        """Make ``state`` (from :meth:`export_state`, or None: nothing learned) the fitted state."""
        if state is None:  # back to unfitted: the fitted attributes go
            for name in ("device_", "net_", "ledger_", "store_", "recognizers_", "tasks_", "history_",
                         "p_task_temperature_", "compact_"):
                self.__dict__.pop(name, None)
            return
        fitted = rebuild(state, self.net, self.input_size, self.recognizer)
        self.device_ = resolve_device(self.device)
        self.net_ = fitted.net.to(self.device_).eval()
        self.compact_ = {}
        self.ledger_, self.store_, self.recognizers_ = fitted.ledger, fitted.store, fitted.recognizers
        self.tasks_, self.history_, self.p_task_temperature_ = fitted.tasks, fitted.history, fitted.temperature
