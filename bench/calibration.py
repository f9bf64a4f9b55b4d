"""Is P_T a probability? ECE of the largest P_T on the test images, raw and as the run calibrates it.

    OMP_NUM_THREADS=1 .venv/bin/python bench/calibration.py --seeds 0,1,2 [--data demo --tasks 5]

For each seed: learn the sequence with default settings (the run fits P_T's temperature after each
task on up to 256 validation images per learned task, ``calibrate_p_task``), then measure on every
learned task's test images the ECE of the largest P_T as the model shows it, and of the raw P_T (the
same model with temperature 1). Validation images fit the temperature; test images only measure.
One JSON line per seed. Nothing is written to disk.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rerelrp.data import build_sequence, load_dataset
from rerelrp.method.learner import ReReLRP
from rerelrp.run.calibration import reliability
from rerelrp.run.runner import SequenceRun


def test_reliability(learner, tasks):
    parts = [(learner.predict(t.test.images).p_task, np.full(len(t.test), k)) for k, t in enumerate(tasks)]
    p, truth = np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts])
    return reliability(p.max(1), p.argmax(1) == truth)


def run(data, n_tasks, seed):
    clock = time.perf_counter()
    tasks = build_sequence([load_dataset(data, seed=seed)], n_tasks)
    learner = ReReLRP(seed=seed)
    metrics = SequenceRun(learner, tasks).run()
    out = {"data": data, "tasks": n_tasks, "seed": seed, **metrics.calibration[-1]}
    calibrated = test_reliability(learner, tasks)
    temperature = learner.p_task_temperature_
    learner.set_p_task_temperature(1.0)
    raw = test_reliability(learner, tasks)
    learner.set_p_task_temperature(temperature)
    out |= {"test_n": raw.n, "test_recognised": raw.recognised, "test_ece_raw": raw.ece, "test_ece": calibrated.ece,
            "seconds": time.perf_counter() - clock}
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
