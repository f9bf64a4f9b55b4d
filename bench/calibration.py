"""Is P_T a probability? ECE of the largest P_T on validation and test, raw and after one temperature.

    OMP_NUM_THREADS=1 .venv/bin/python bench/calibration.py --seeds 0,1,2 [--data demo --tasks 5]

For each seed: learn the sequence with default settings, then collect P_T on every learned task's
validation and test images. A temperature tau (P_T^(1/tau), normalised) is fitted on validation
only, by the negative log-likelihood of the true task. The expected calibration error
(:mod:`rerelrp.run.calibration`, 10 equal bins) is reported on both splits, raw and with tau. One
JSON line per seed. Nothing is written to disk.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.optimize import minimize_scalar

from rerelrp.data import build_sequence, load_dataset
from rerelrp.method.learner import ReReLRP
from rerelrp.run.calibration import reliability
from rerelrp.run.runner import SequenceRun


def with_temperature(p_task, tau):
    logits = np.log(np.clip(p_task, 1e-12, 1.0)) / tau
    logits -= logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def collect(learner, tasks, split):
    parts = [(learner.predict(t.split(split).images).p_task, np.full(len(t.split(split)), k)) for k, t in enumerate(tasks)]
    return np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts])


def fit_temperature(p_task, truth):
    def nll(tau):
        return -np.log(np.clip(with_temperature(p_task, tau)[np.arange(len(truth)), truth], 1e-12, 1.0)).mean()

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def run(data, n_tasks, seed):
    clock = time.perf_counter()
    tasks = build_sequence([load_dataset(data, seed=seed)], n_tasks)
    learner = ReReLRP(seed=seed)
    SequenceRun(learner, tasks).run()
    out = {"data": data, "tasks": n_tasks, "seed": seed}
    p_val, y_val = collect(learner, tasks, "val")
    tau = out["tau"] = fit_temperature(p_val, y_val)
    for split in ("val", "test"):
        p, y = (p_val, y_val) if split == "val" else collect(learner, tasks, split)
        raw, tempered = (reliability(q.max(1), q.argmax(1) == y) for q in (p, with_temperature(p, tau)))
        out |= {f"{split}_n": raw.n, f"{split}_recognised": raw.recognised, f"{split}_ece": raw.ece,
                f"{split}_ece_tau": tempered.ece}
    out["seconds"] = time.perf_counter() - clock
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="demo")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args(argv)
    for seed in (int(s) for s in args.seeds.split(",")):
        print(json.dumps(run(args.data, args.tasks, seed)), flush=True)


if __name__ == "__main__":
    main()
