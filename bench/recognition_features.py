"""What other summaries of the same frozen sub-networks would buy the Gaussian recognisers, per stored byte.

The package summarises a unit by its spatial mean (:func:`~rerelrp.lrp.relevance.unit_activation`). This
study adds each conv unit's spatial standard deviation ("s") and maximum ("x") to the mean ("m"), and
pairs each with a covariance kept whole (the package's), block-diagonal by layer or by summary, or as
rank k plus diagonal (float16 factors). On a saved workspace every sub-network is frozen and exact, so
the statistics task s's images would have added to recogniser m when s was learned are recomputed
from the training images now; recognition is read on the validation images only (test images are
not read). The "m full" row is the package's own recogniser, so it reproduces the run's figure.

    OMP_NUM_THREADS=1 .venv/bin/python bench/recognition_features.py --workspace W0 --seed 0 \\
        --data ../shared/data/medmnist/bloodmnist.npz --tasks 4

``--workspace`` is one saved by ``rerelrp run ... --seed S --workspace W`` with the same ``--data``,
``--tasks`` and ``--seed`` (the seed draws nothing in a MedMNIST split; it is recorded). Writes
``bench/out/recognition_features/seed_S.json``: bytes and validation recognition per variant and
temperature. Nothing per image is written.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rerelrp.method.recognition import chain_probabilities
from rerelrp.method.task_gaussians import FLOOR, ClassMoments, features, oas
from rerelrp.model.inputs import to_input
from rerelrp.run.method_run import TaskRecipe
from rerelrp.store.workspace.loading import load_workspace

OUT = Path(__file__).resolve().parent / "out" / "recognition_features"
SUMMARIES = {"m": (0,), "m+s": (0, 1), "m+s+x": (0, 1, 2)}
COVARIANCES = ("full", "layer", "summary", "rank32", "rank64", "rank128")
TEMPERATURES = (4, 8, 16)


def _summaries(output):
    """(n, units, 3): spatial mean, standard deviation and maximum of the rectified output (linear units: x, 0, x)."""
    r = torch.relu(output)
    if r.dim() == 4:
        f = r.flatten(2)
        return torch.stack([f.mean(2), f.std(2), f.amax(2)], 2)
    return torch.stack([r, torch.zeros_like(r), r], 2)


class Study:
    def __init__(self, learner, tasks):
        self.learner, self.tasks, self.net, self.ledger = learner, tasks, learner.net_, learner.ledger_
        layers = self.net.unit_layers
        self.layer_of = np.concatenate([np.full(layer.n_units, i) for i, layer in enumerate(layers)])
        self.conv = np.concatenate([np.full(layer.n_units, layer.is_conv) for layer in layers])
        T = learner.n_tasks
        self.signals = {(m, s, split): self._pass(getattr(tasks[s], split).images, m)
                        for m in range(T - 1) for s in range(T) for split in ("train", "val")
                        if split == "val" or s >= m}

    @torch.no_grad()
    def _pass(self, images, m):
        """(n, U, 3) summaries of every unit of sub-network m (zero where m does not keep it)."""
        x = to_input(images, self.learner.input_size_)
        masks = self.ledger.group_masks([m], "cpu")
        out = []
        for i in range(0, len(x), 512):
            xb = x[i : i + 512]
            with self.net.unit_outputs(reduce=_summaries) as stored, \
                    self.net.subnetworks({k: v.expand(len(xb), -1) for k, v in masks.items()}):
                self.net(xb)
                out.append(torch.cat([stored[layer.name] for layer in self.net.unit_layers], 1))
        return torch.cat(out).numpy()

    def _columns(self, kept, which):
        """Flat indices into (U, 3) of the features, and a group id per feature (layer * 10 + summary)."""
        idx, group = [], []
        for summary in which:
            units = np.flatnonzero(kept if summary == 0 else kept & self.conv)
            idx.append(units * 3 + summary)
            group.append(self.layer_of[units] * 10 + summary)
        return np.concatenate(idx), np.concatenate(group)

    def _z(self, key, columns):
        v = self.signals[key]
        return features(v.reshape(len(v), -1)[:, columns])

    def evaluate(self, which, covariance):
        """Bytes of the store and validation recognition (%) per temperature."""
        T, tasks = self.learner.n_tasks, self.tasks
        p_r, nbytes = {tau: [] for tau in TEMPERATURES}, 0
        for m in range(T):
            kept = self.ledger.flat(self.ledger.task(m)).astype(bool)
            columns, group = self._columns(kept, which)
            d = len(columns)
            unit_list = 8 * int(kept.sum())
            if m == T - 1:  # the newest task's recogniser is kept too, its own means only
                nbytes += _approx(np.eye(d), covariance, group)[1] + tasks[m].n_classes * d * 4 + unit_list
                continue
            moments, scatter, n = {}, 0.0, 0
            for s in range(m, T):
                moments[s] = ClassMoments(tasks[s].n_classes, d)
                moments[s].add(self._z((m, s, "train"), columns), tasks[s].train.labels)
                scatter, n = scatter + moments[s].scatter, n + int(moments[s].counts.sum())
            cov, cov_bytes = _approx(oas(scatter / n, n), covariance, group)
            nbytes += cov_bytes + sum(len(moments[s].counts) for s in moments) * d * 4 + unit_list
            whitener = np.linalg.inv(np.linalg.cholesky(cov + np.eye(d) * FLOOR * np.trace(cov) / d))
            ll = np.concatenate([_log_likelihoods(self._z((m, s, "val"), columns) @ whitener.T, moments, whitener)
                                 for s in range(T)])
            for tau in TEMPERATURES:
                scores = ll / tau
                p_r[tau].append(np.exp(scores[:, 0] - np.logaddexp.reduce(scores, axis=1)))
        truth = np.concatenate([np.full(len(tasks[s].val), s) for s in range(T)])
        recognition = {tau: round(100.0 * float(np.mean(chain_probabilities(np.stack(p, 1)).argmax(1) == truth)), 2)
                       for tau, p in p_r.items()}
        return nbytes, recognition


def _approx(cov, kind, group):
    """The covariance as kept, and its bytes (float16 entries; a rank-k factor adds k + d float32)."""
    d = len(cov)
    if kind == "full":
        return cov, d * (d + 1)  # the lower triangle of its Cholesky factor
    if kind.startswith("rank"):
        k = min(int(kind[4:]), d)
        w, v = np.linalg.eigh(cov)
        w, v = w[::-1][:k], v[:, ::-1][:, :k]
        low = (v * w) @ v.T
        rest = np.maximum(np.diag(cov) - np.diag(low), FLOOR * np.trace(cov) / d)
        return low + np.diag(rest), 2 * d * k + 4 * (k + d)
    key = group if kind == "layer" else group % 10
    same = key[:, None] == key[None]
    return cov * same, sum(int(c) * (int(c) + 1) for c in np.unique(key, return_counts=True)[1])


def _log_likelihoods(zw, moments, whitener):
    """(n, tasks >= m): log sum_c n_sc N(z; mu_sc, Sigma) of whitened rows, up to a shared constant."""
    out = []
    for cm in moments.values():
        ok = cm.counts > 0
        centres = cm.means[ok] @ whitener.T
        d2 = (zw ** 2).sum(1)[:, None] - 2 * zw @ centres.T + (centres ** 2).sum(1)[None]
        out.append(np.logaddexp.reduce(np.log(cm.counts[ok])[None] - 0.5 * d2, axis=1))
    return np.stack(out, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    learner, _, _ = load_workspace(args.workspace, device="cpu")
    study = Study(learner, TaskRecipe.of([args.data], args.tasks)(args.seed))
    rows = []
    for name, which in SUMMARIES.items():
        for covariance in COVARIANCES:
            if name == "m" and covariance == "summary":
                continue  # one summary: the same as full
            nbytes, recognition = study.evaluate(which, covariance)
            rows.append({"features": name, "covariance": covariance, "bytes": nbytes, "val_recognition": recognition})
            print(f"{name:6s} {covariance:8s} {nbytes:>10,d} B  validation recognition {recognition}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"seed_{args.seed}.json").write_text(json.dumps({"workspace": args.workspace, "seed": args.seed, "rows": rows},
                                                            indent=1))


if __name__ == "__main__":
    main()
