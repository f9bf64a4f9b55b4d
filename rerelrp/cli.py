"""The command line: ``rerelrp run`` learns a task sequence headless and writes its metrics."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rerelrp.errors import RerelrpError, StopRequested
from rerelrp.fileio import write_json_atomic

DEFAULTS = {"net": "vgg", "epochs": 10, "batch_size": 64, "lr": 0.05, "acc_drop": 1.0, "seed": 0}


def build_parser():
    from rerelrp.learner import LearnerConfig
    from rerelrp.nets import NETS
    from rerelrp.relevance import COMPOSITES

    cfg = LearnerConfig()
    parser = argparse.ArgumentParser(prog="rerelrp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="learn a task sequence and write metrics.json and run.json",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--data", action="append", required=True,
                     help="'demo', a MedMNIST .npz path or flag (bloodmnist, bloodmnist_64), or a DICOM folder/zip; "
                          "repeat for a cross-domain sequence (one task per data set)")
    run.add_argument("--tasks", type=int, default=None,
                     help="split a single data set into this many tasks of consecutive classes (default: 2 classes per task)")
    run.add_argument("--out", required=True, type=Path, help="output folder")
    run.add_argument("--method", choices=("rerelrp", "finetune", "joint"), default="rerelrp",
                     help="finetune and joint are the lower and upper reference bounds")
    run.add_argument("--net", choices=NETS, default=cfg.net)
    run.add_argument("--epochs", type=int, default=cfg.epochs)
    run.add_argument("--batch-size", type=int, default=cfg.batch_size)
    run.add_argument("--lr", type=float, default=cfg.lr)
    run.add_argument("--acc-drop", type=float, default=cfg.acc_drop,
                     help="validation accuracy points a task may lose when its units are pruned")
    run.add_argument("--min-free", type=float, default=cfg.min_free, help="share of every layer kept free for later tasks")
    run.add_argument("--no-grow", action="store_true", help="do not add units to layers that fill up")
    run.add_argument("--composite", choices=COMPOSITES, default=cfg.composite)
    run.add_argument("--input-size", type=int, default=cfg.input_size)
    run.add_argument("--seed", type=int, default=cfg.seed)
    run.add_argument("--device", default=cfg.device, help="auto, cpu, cuda or mps")
    run.add_argument("--data-root", default="./data", help="where MedMNIST flags are looked up")
    run.add_argument("--download", action="store_true", help="download missing MedMNIST files (network access)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=cmd_run)
    return parser


class PhaseBars:
    """One tqdm bar per task and phase, replaced when the phase changes."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.bar = None
        self.key = None

    def __call__(self, event):
        if not self.enabled:
            return
        from tqdm import tqdm

        key = (event.task, event.phase)
        if key != self.key:
            self.close()
            self.key = key
            self.bar = tqdm(total=event.total, desc=f"task {event.task} {event.phase:<10}", leave=False, file=sys.stderr)
        self.bar.total = event.total
        self.bar.n = event.step
        self.bar.set_postfix_str(event.message, refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_run(args):
    from rerelrp.baselines import BaselineLearner
    from rerelrp.data import build_sequence, load_dataset
    from rerelrp.learner import ReReLRP
    from rerelrp.runner import SequenceRun, run_record

    config = dict(net=args.net, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, acc_drop=args.acc_drop,
                  min_free=args.min_free, grow=not args.no_grow, composite=args.composite, input_size=args.input_size,
                  seed=args.seed, device=args.device)
    learner = ReReLRP(**config) if args.method == "rerelrp" else BaselineLearner(args.method, **config)
    datasets = []
    for source in args.data:
        ds = load_dataset(source, root=args.data_root, download=args.download, seed=args.seed)
        for skipped in (ds.report.skipped if ds.report else []):
            print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
        datasets.append(ds)
    tasks = build_sequence(datasets, args.tasks)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "run.json", run_record(learner, tasks, args.data, sys.argv, args.method)
                      | {"load_reports": [ds.report.to_dict() for ds in datasets if ds.report]})
    print(f"{len(tasks)} tasks on {learner.describe_device()}: " + ", ".join(f"{t.name} {t.class_names}" for t in tasks))
    run = SequenceRun(learner, tasks)
    bars = PhaseBars(not args.quiet)
    try:
        while not run.done:
            summary = run.step(callback=bars)
            bars.close()
            write_json_atomic(args.out / "metrics.json", run.metrics.to_dict())
            i = summary["task"]
            seconds = " ".join(f"{k} {v:.1f}s" for k, v in run.metrics.seconds[-1].items())
            print(f"task {i} {summary['name']}: TAg {run.metrics.tag_after_each_task()[-1]:.2f}  "
                  f"TAw {sum(run.metrics.acc_taw[-1]) / (i + 1):.2f}  "
                  f"recognition {run.metrics.task_recognition[-1]:.1f}%  ({seconds})")
    finally:
        bars.close()
    final = run.metrics.final()
    print(f"final: TAg {final['tag']:.2f}  TAw {final['taw']:.2f}  forgetting TAg {final['forgetting_tag']:.2f}  "
          f"TAw {final['forgetting_taw']:.2f}  -> {args.out / 'metrics.json'}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except StopRequested as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; metrics.json holds every task completed so far", file=sys.stderr)
        return 130
    except RerelrpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
