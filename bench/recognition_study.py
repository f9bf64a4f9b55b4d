"""Where does task recognition fail, and which recogniser design fixes it? (issue: tasks within one data set)

Step 1 (``features``): learn a sequence with the given settings, then read, through every
sub-network, the relevance of every unit, each layer's relevance size before normalising and
the sub-network's logits, for (a) a stratified sample of each task's training images (what the
learner can keep), (b) its validation images and (c) its test images. Old sub-networks are
frozen bit for bit, so rows read at the end equal rows read when their task was learned.
Saved to ``OUT/features.npz``.

Step 2 (``evaluate``): fit recogniser variants on what the learner may keep (training rows of
task t through sub-networks m <= t, validation rows when a variant uses them) and report
task recognition on validation images (to choose) and on test images (to report), per task,
with the confusion matrix. Nothing is chosen on test images.

    .venv/bin/python bench/recognition_study.py features --data demo --out /work/study/digits
    .venv/bin/python bench/recognition_study.py evaluate --out /work/study/digits
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPLITS = ("train", "val", "test")


def parse_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


# ----------------------------------------------------------------------------------- step 1
def features(args):
    from rerelrp.data import build_sequence, load_dataset
    from rerelrp.method.learner import ReReLRP
    from rerelrp.method.subnetworks import Subnetworks
    from rerelrp.model.inputs import to_input
    from rerelrp.store.workspace import is_workspace, load_workspace, save_workspace

    settings = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    datasets = [load_dataset(d, root=args.data_root, seed=args.seed) for d in args.data]
    tasks = build_sequence(datasets, args.tasks)
    saved = Path(args.out) / "workspace"
    if is_workspace(saved):
        learner = load_workspace(saved)[0]
    else:
        learner = ReReLRP(seed=args.seed, **settings)
        clock = time.perf_counter()
        for task in tasks:
            learner.add_task(task)
            print(f"task {learner.n_tasks - 1} learned ({time.perf_counter() - clock:.0f} s)", flush=True)
        save_workspace(saved, learner, tasks=tasks)
    T = learner.n_tasks
    runner = Subnetworks(learner.net_, learner.ledger_, learner.offsets_, learner.composite, torch.device("cpu"))
    rng = np.random.default_rng([args.seed, 999])
    out = {"offsets": learner.offsets_, "layer_sizes": np.array(list(learner.ledger_.layer_sizes.values()))}
    kept = learner.ledger_.kept
    union = {name: np.logical_or.accumulate(k, axis=0) for name, k in kept.items()}  # units kept by tasks <= m
    for t, task in enumerate(tasks):
        for split in SPLITS:
            part = task.split(split)
            index = np.arange(len(part))
            if split == "train" and len(index) > args.train_rows:
                index = np.sort(rng.choice(index, args.train_rows, replace=False))
            x = to_input(part.images[index], learner.input_size_)
            n = len(x)
            groups = torch.arange(T).repeat_interleave(n)
            res = runner.lrp(x.repeat(T, 1, 1, 1), groups)
            out[f"{split}/{t}/labels"] = part.labels[index]
            out[f"{split}/{t}/units"] = res.units.numpy().reshape(T, n, -1).astype(np.float32)
            out[f"{split}/{t}/norms"] = res.layer_norms.numpy().reshape(T, n, -1).astype(np.float32)
            out[f"{split}/{t}/logits"] = res.logits.numpy().reshape(T, n, -1).astype(np.float32)
            out[f"{split}/{t}/acts"] = activations(learner.net_, x, kept, T).astype(np.float32)
            out[f"{split}/{t}/acts_union"] = activations(learner.net_, x, union, T).astype(np.float32)
        print(f"features of task {t} read", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    np.savez_compressed(Path(args.out) / "features.npz", **out)
    meta = {"data": args.data, "tasks": args.tasks, "seed": args.seed, "settings": settings, "T": T,
            "history": [{"name": h.name, "classes": h.classes, "prune": h.prune} for h in learner.history_]}
    (Path(args.out) / "meta.json").write_text(json.dumps(meta, indent=1, default=float))


@torch.no_grad()
def activations(net, x, kept, T):
    """(T, N, units) mean post-ReLU activation of every unit through the mask ``kept[layer][m]`` of each m."""
    out = []
    with net.unit_outputs() as stored:
        for m in range(T):
            rows = []
            for start in range(0, len(x), 512):
                xb = x[start : start + 512]
                masks = {name: torch.tensor(k[m], dtype=torch.float32)[None].expand(len(xb), -1)
                         for name, k in kept.items()}
                with net.subnetworks(masks):
                    net.features(xb)
                rows.append(torch.cat([torch.relu(stored[layer.name]).flatten(2).mean(2) if stored[layer.name].dim() == 4
                                       else torch.relu(stored[layer.name]) for layer in net.unit_layers], 1))
            out.append(torch.cat(rows).numpy())
    return np.stack(out)


# ----------------------------------------------------------------------------------- step 2
class Data:
    """The cached features: ``get(split, t, m)`` -> dict of arrays of task t's images through sub-network m."""

    def __init__(self, folder):
        self.z = dict(np.load(Path(folder) / "features.npz"))
        self.meta = json.loads((Path(folder) / "meta.json").read_text())
        self.T = self.meta["T"]
        self.layer_sizes = self.z["layer_sizes"]

    def get(self, split, t, m):
        logits = self.z[f"{split}/{t}/logits"][m]
        logits = np.where(np.isfinite(logits), logits, -np.inf)
        out = {"units": self.z[f"{split}/{t}/units"][m], "norms": self.z[f"{split}/{t}/norms"][m], "logits": logits,
               "labels": self.z[f"{split}/{t}/labels"]}
        for key in ("acts", "acts_union"):
            if f"{split}/{t}/{key}" in self.z:
                out[key] = self.z[f"{split}/{t}/{key}"][m]
        return out


def scalars(d):
    """Confidence of the sub-network on the image: max logit, energy, margin, entropy, log layer sizes."""
    lg = d["logits"]
    finite = np.isfinite(lg)
    lg0 = np.where(finite, lg, -1e30)
    top = np.sort(lg0, axis=1)[:, ::-1]
    energy = np.log(np.sum(np.where(finite, np.exp(lg0 - top[:, :1]), 0.0), axis=1)) + top[:, 0]
    p = np.where(finite, np.exp(lg0 - energy[:, None]), 0.0)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-30)), 0.0), axis=1)
    margin = top[:, 0] - top[:, 1] if lg.shape[1] > 1 else top[:, 0]
    return np.column_stack([top[:, 0], energy, margin, entropy, np.log(d["norms"] + 1e-12)])


def select(id_units, k, how, layer_sizes):
    score = np.abs(id_units).mean(0)
    if how == "scaled":  # per-layer normalisation makes small layers look relevant: undo it
        score = score * np.repeat(layer_sizes, layer_sizes)
    elif how == "perlayer":
        starts = np.concatenate([[0], np.cumsum(layer_sizes)[:-1]])
        per = max(1, k // len(layer_sizes))
        chosen = []
        for s0, n in zip(starts, layer_sizes):
            chosen.extend(s0 + np.argsort(-score[s0 : s0 + n], kind="stable")[:per])
        return np.sort(np.asarray(chosen))
    return np.sort(np.argsort(-score, kind="stable")[:k])


def make_model(kind, seed, n_trees=300, leaf=5, depth=40):
    from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "rf":
        return RandomForestClassifier(n_estimators=n_trees, max_depth=depth, min_samples_leaf=leaf, criterion="log_loss",
                                      max_features="log2", bootstrap=False, class_weight="balanced", random_state=seed,
                                      n_jobs=-1)
    if kind == "et":
        return ExtraTreesClassifier(n_estimators=n_trees, min_samples_leaf=3, max_features="sqrt",
                                    class_weight="balanced", random_state=seed, n_jobs=-1)
    if kind == "hgb":
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, class_weight="balanced",
                                              random_state=seed)
    if kind == "lr":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced"))
    raise ValueError(kind)


def rows(data, variant, split, t, m, columns):
    """Recogniser m's feature rows for task t's images: sub-network m's selected units (with ``cumulative``,
    those of every sub-network j <= m, each with its own selection), plus optional extras."""
    subnets = range(m + 1) if variant.get("cumulative") else [m]
    parts = []
    for j in subnets:
        d = data.get(split, t, j)
        if variant.get("units", True):
            parts.append(d["units"][:, columns[j]])
        if variant.get("acts"):  # activations of the units sub-network j (or, "union", every task <= j) kept
            key = "acts_union" if variant["acts"] == "union" else "acts"
            used = np.flatnonzero(np.abs(data.get("train", j, j)[key]).sum(0) > 0)
            parts.append(d[key][:, used])
        if variant.get("scalars"):
            parts.append(scalars(d))
        if variant.get("start_class"):
            lg = np.where(np.isfinite(d["logits"]), d["logits"], -1e30)
            parts.append(np.eye(lg.shape[1])[lg.argmax(1)])
    return np.concatenate(parts, axis=1)


def _logit(p, eps=1e-3):
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


def evaluate_variant(data, variant, seed=0):
    """Recognition on val and test of every task after the last one, chain of recognisers (+ variant tweaks)."""
    T = data.T
    id_split = variant.get("id_rows", "train")
    models, columns = [], []
    id_splits = ["train"] if id_split == "train" else ["val"] if id_split == "val" else ["train", "val"]
    for m in range(T):
        id_units = np.concatenate([data.get(s, m, m)["units"] for s in id_splits])
        columns.append(select(id_units, variant.get("k", 40), variant.get("select", "top"), data.layer_sizes))
    for m in range(T - 1):
        X_id = np.concatenate([rows(data, variant, s, m, m, columns) for s in id_splits])
        X_ood = np.concatenate([rows(data, variant, "train", t, m, columns) for t in range(m + 1, T)])
        X = np.concatenate([X_id, X_ood])
        y = np.concatenate([np.ones(len(X_id)), np.zeros(len(X_ood))]).astype(int)
        model = make_model(variant.get("model", "rf"), seed * 7919 + m, variant.get("trees", 300),
                           variant.get("leaf", 5), variant.get("depth", 40))
        weights = None
        if variant.get("val_weight"):  # validation rows added to the training rows with more weight
            X_val_id = rows(data, variant, "val", m, m, columns)
            X_val_ood = np.concatenate([rows(data, variant, "val", t, m, columns) for t in range(m + 1, T)])
            X = np.concatenate([X, X_val_id, X_val_ood])
            y = np.concatenate([y, np.ones(len(X_val_id), int), np.zeros(len(X_val_ood), int)])
            weights = np.concatenate([np.ones(len(X) - len(X_val_id) - len(X_val_ood)),
                                      np.full(len(X_val_id) + len(X_val_ood), float(variant["val_weight"]))])
        model.fit(X, y, **({} if weights is None else {"sample_weight": weights}))
        if variant.get("calibrate"):  # Platt scaling of P_R on validation rows (ID: task m, OOD: later tasks)
            from sklearn.linear_model import LogisticRegression

            X_val = np.concatenate([rows(data, variant, "val", t, m, columns) for t in range(m, T)])
            y_val = np.concatenate([np.full(len(data.get("val", t, m)["labels"]), int(t == m)) for t in range(m, T)])
            z = _logit(model.predict_proba(X_val)[:, list(model.classes_).index(1)])
            model.calibrator_ = LogisticRegression(class_weight="balanced", C=variant.get("C", 1.0)).fit(z[:, None], y_val)
        models.append(model)
    result = {}
    for split in ("val", "test"):
        truth, predicted = [], []
        for t in range(T):
            n = len(data.get(split, t, 0)["labels"])
            p_r = np.zeros((n, T - 1))
            for m in range(T - 1):
                X = rows(data, variant, split, t, m, columns)
                proba = models[m].predict_proba(X)
                p_r[:, m] = proba[:, list(models[m].classes_).index(1)]
                if hasattr(models[m], "calibrator_"):
                    p_r[:, m] = models[m].calibrator_.predict_proba(_logit(p_r[:, m])[:, None])[:, 1]
            remaining = np.ones(n)
            p_t = np.zeros((n, T))
            for m in range(T - 1):
                p_t[:, m] = p_r[:, m] * remaining
                remaining = remaining * (1 - p_r[:, m])
            p_t[:, T - 1] = remaining
            truth.append(np.full(n, t))
            predicted.append(p_t.argmax(1))
        truth, predicted = np.concatenate(truth), np.concatenate(predicted)
        per_task = [100.0 * np.mean(predicted[truth == t] == t) for t in range(T)]
        confusion = np.zeros((T, T), int)
        np.add.at(confusion, (truth, predicted), 1)
        result[split] = {"pooled": 100.0 * np.mean(predicted == truth), "per_task": per_task,
                         "confusion": confusion.tolist()}
    return result


VARIANTS = {
    "baseline": {},
    "id=val": {"id_rows": "val"},
    "id=train+val": {"id_rows": "train+val"},
    "select=scaled": {"select": "scaled"},
    "select=perlayer": {"select": "perlayer", "k": 42},
    "k=80": {"k": 80},
    "+scalars": {"scalars": True},
    "scalars only": {"scalars": True, "units": False},
    "model=et": {"model": "et"},
    "model=hgb": {"model": "hgb"},
    "model=lr": {"model": "lr"},
    "+class": {"start_class": True},
    "cumulative": {"cumulative": True},
    "cumulative+class": {"cumulative": True, "start_class": True},
    "cumulative k=20": {"cumulative": True, "k": 20},
    "cumulative k=80": {"cumulative": True, "k": 80},
    "cumulative+scalars": {"cumulative": True, "scalars": True},
    "calibrate": {"calibrate": True},
    "val_weight=5": {"val_weight": 5},
    "val_weight=20": {"val_weight": 20},
    "cumulative+calibrate": {"cumulative": True, "calibrate": True},
    "k=80+calibrate": {"k": 80, "calibrate": True},
}


def evaluate(args):
    data = Data(args.out)
    names = args.variants or list(VARIANTS)
    print(f"{data.meta['data']} seed {data.meta['seed']}, {data.T} tasks; recognition % (val | test), per task")
    for name in names:
        spec = VARIANTS[name] if name in VARIANTS else json.loads(name)
        clock = time.perf_counter()
        r = evaluate_variant(data, spec)
        print(f"{name:<18} val {r['val']['pooled']:5.1f} | test {r['test']['pooled']:5.1f}   val/task "
              + " ".join(f"{v:5.1f}" for v in r["val"]["per_task"]) + "   test/task "
              + " ".join(f"{v:5.1f}" for v in r["test"]["per_task"]) + f"   ({time.perf_counter() - clock:.1f} s)",
              flush=True)
        if args.confusion:
            print("  test confusion (rows: true task):", r["test"]["confusion"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    f = sub.add_parser("features")
    f.add_argument("--data", action="append", required=True)
    f.add_argument("--tasks", type=int, default=None)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--set", action="append", default=[])
    f.add_argument("--train-rows", type=int, default=512)
    f.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "medmnist"))
    f.add_argument("--out", required=True)
    e = sub.add_parser("evaluate")
    e.add_argument("--out", required=True)
    e.add_argument("--variants", nargs="*")
    e.add_argument("--confusion", action="store_true")
    args = parser.parse_args()
    features(args) if args.step == "features" else evaluate(args)


if __name__ == "__main__":
    main()
