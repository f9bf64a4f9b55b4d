"""The task-agnostic answer, built from a learner's fitted state: P_T, the class, the scope score, explanations.

Prediction's one home. The learner hands its fitted state to a :class:`Predictor`, which runs the
images through every sub-network in stacked passes (:class:`~rerelrp.method.subnetworks.Subnetworks`),
asks the recognisers which task each image belongs to (the chain), reads the out-of-scope score
and, for explanations, keeps the heatmaps and the most relevant units. It owns nothing and is
made afresh for each call, so it always answers with the learner's current state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rerelrp.device import blas_threads
from rerelrp.method.base import Prediction
from rerelrp.method.temperature import tempered
from rerelrp.model.units import layer_starts, unit_pairs


@dataclass
class Explanation:
    """Input heatmaps and most relevant units of every sub-network, with the task-agnostic prediction.

    ``prediction`` equals what ``ReReLRP.predict`` returns for the same images under the
    default composite (forest recognisers read relevance, so another composite may recognise differently).
    """

    heatmaps: np.ndarray  # (N, T, size, size) input relevance, summed over colour
    subnet_class: np.ndarray  # (N, T) class each sub-network predicts (the LRP start)
    subnet_prob: np.ndarray  # (N, T) softmax probability of that class within its head
    top_units: list  # [n][m] -> list of (layer, unit, relevance), most relevant first
    prediction: Prediction
    composite: str = ""


class Predictor:
    """P_T, the answer, the scope score and explanations of a fitted learner's sub-networks."""

    def __init__(self, subnetworks, input_size, recognition, class_names, scope_rate, temperature=1.0):
        self.subnetworks, self.input_size, self.recognition = subnetworks, input_size, recognition
        self.class_names, self.scope_rate, self.temperature = class_names, scope_rate, temperature

    @property
    def n_tasks(self):
        return self.subnetworks.n_tasks

    def recognise(self, units):
        """P_T for (N, T, 2U) unit signals through each sub-network, tempered by the fitted temperature."""
        return tempered(self.recognition.p_task(units, self.subnetworks.ledger.layer_sizes), self.temperature)

    def scope(self, units, stats):
        """Out-of-scope scores (N,) from (N, T, 2U) unit signals and the input statistics (NaN: no scope data)."""
        return self.recognition.scope_score(units, stats, self.scope_rate, self.subnetworks.ledger.layer_sizes)

    def answer(self, subnet_class, logits, units, stats):
        """The task-agnostic :class:`Prediction` from each sub-network's class, (-inf padded) logits and unit signals."""
        with blas_threads(torch.get_num_threads()):  # the recognisers' products on the threads torch may use
            p_task, score = self.recognise(units), self.scope(units, stats)
        task = p_task.argmax(1)
        local = subnet_class[np.arange(len(task)), task]
        glob = self.subnetworks.offsets[task] + local
        return Prediction(task, local, glob, p_task, subnet_class, [self.class_names[g] for g in glob],
                          score, np.nan_to_num(score, nan=0.0) > 1.0, subnet_proba=torch.softmax(logits, -1).numpy())

    def predict(self, images, memo=None):
        subnet_class, logits, units, _, stats = self.subnetworks.stacked(
            images, self.input_size, memo=memo, relevance=self.recognition.needs_relevance)
        return self.answer(subnet_class, logits, units, stats)

    def explain(self, images, composite, top_k):
        subnet_class, logits, units, heats, stats = self.subnetworks.stacked(images, self.input_size, heatmap=True,
                                                                             composite=composite)
        ledger = self.subnetworks.ledger
        relevance = units[..., : ledger.n_units]
        prob = torch.softmax(logits, -1).gather(-1, torch.as_tensor(subnet_class)[..., None])[..., 0].numpy()
        names, starts = list(ledger.layer_sizes), layer_starts(ledger.layer_sizes)
        top = []
        for i in range(len(units)):
            per_task = []
            for m in range(self.n_tasks):
                best = np.argsort(-relevance[i, m])[:top_k]
                per_task.append([(names[layer], int(unit), float(relevance[i, m, u]))
                                 for (layer, unit), u in zip(unit_pairs(best, starts), best)])
            top.append(per_task)
        return Explanation(heats, subnet_class, prob, top, self.answer(subnet_class, logits, units, stats), composite)
