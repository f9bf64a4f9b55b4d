"""The study behind the scope score (docs/method-notes.md, "None of the learned tasks").

    rerelrp run --data ../shared/data/medmnist/pneumoniamnist.npz --data ../shared/data/medmnist/breastmnist.npz \
        --seed S --workspace /tmp/pb --out /tmp/pb-run
    python bench/scope_study.py /tmp/pb S

Every variant scores an image per sub-network, sets each task's threshold at the 95th percentile
of its validation images, and takes min over tasks of score / threshold. In scope: the test images
of both tasks; out of scope: retina and BloodMNIST test images (600 at most). Reference rows are a
fresh sample of up to 2,048 training images per task, recomputed here (not the workspace's rows).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from rerelrp.data import build_sequence, load_dataset
from rerelrp.method.recognition import signals
from rerelrp.method.scope import input_statistics
from rerelrp.model.inputs import to_input
from rerelrp.store.workspace import load_workspace

MEDMNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"


def main(workspace, seed):
    torch.set_num_threads(1)
    learner, _, _ = load_workspace(workspace)
    runner, n_units, T = learner._subnetworks(), learner.ledger_.n_units, learner.n_tasks
    tasks = build_sequence([load_dataset(MEDMNIST / f"{n}.npz", seed=seed) for n in ("pneumoniamnist", "breastmnist")])
    kept = [learner.ledger_.flat(learner.ledger_.task(m)) for m in range(T)]
    rng = np.random.default_rng(0)

    def read(images, m):
        """Activations of m's kept units, logits of m's head, input statistics."""
        x = to_input(images, learner.input_size_)
        parts = [runner.lrp(x[s : s + 256], torch.full((len(x[s : s + 256]),), m)) for s in range(0, len(x), 256)]
        acts = np.concatenate([signals(p)[:, n_units:] for p in parts])[:, kept[m]]
        logits = torch.cat([p.logits for p in parts]).numpy()
        return acts, logits[:, np.isfinite(logits[0])], input_statistics(x)

    sets = {}
    for m, task in enumerate(tasks):
        pick = rng.choice(len(task.train), min(2048, len(task.train)), replace=False)
        sets[("ref", m)], sets[("val", m)], sets[("test", m)] = task.train.images[pick], task.val.images, task.test.images
    foreign = {n: load_dataset(MEDMNIST / f"{n}.npz", seed=seed).test.images[:600] for n in ("retinamnist", "bloodmnist")}
    feats = {}
    for (kind, owner), images in sets.items():
        for m in range(T) if kind == "test" else [owner]:
            feats[kind, owner, m] = read(images, m)
    for name, images in foreign.items():
        for m in range(T):
            feats[name, None, m] = read(images, m)

    def knn(transform, k=5):
        def score(kind, owner, m):
            ref = transform(*feats["ref", m, m], m)
            return NearestNeighbors(n_neighbors=k).fit(ref).kneighbors(transform(*feats[kind, owner, m], m))[0][:, -1]
        return score

    def spread(m, parts):
        ref = np.concatenate([feats["ref", m, m][i] for i in parts], 1)
        return ref.std(0) + 1e-6

    def softmax_score(kind, owner, m):
        z = feats[kind, owner, m][1]
        p = np.exp(z - z.max(1, keepdims=True))
        return -(p / p.sum(1, keepdims=True)).max(1)

    def energy_score(kind, owner, m):
        z = feats[kind, owner, m][1]
        return -(z.max(1) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)))

    variants = {
        "max softmax probability": softmax_score,
        "energy": energy_score,
        "raw activations, 5th neighbour": knn(lambda a, z, s, m: a),
        "L2-normalised activations": knn(lambda a, z, s, m: a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)),
        "scaled activations": knn(lambda a, z, s, m: a / spread(m, [0])),
        "scaled activations + input statistics": knn(lambda a, z, s, m: np.concatenate([a, s], 1) / spread(m, [0, 2])),
    }
    for name, score in variants.items():
        threshold = [np.quantile(score("val", m, m), 0.95) for m in range(T)]
        # scores may be negative (softmax, energy): compare by difference to the threshold, 0 = the threshold
        def rel(kind, owner, score=score, threshold=threshold):
            return np.min([score(kind, owner, m) - threshold[m] for m in range(T)], 0)
        inside = np.concatenate([rel("test", t) for t in range(T)])
        line = f"{name:40s} in scope flagged {np.mean(inside > 0):6.1%}"
        for other in foreign:
            out = rel(other, None)
            auroc = roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(out))], np.r_[inside, out])
            line += f" | {other}: flagged {np.mean(out > 0):6.1%}, AUROC {auroc:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
