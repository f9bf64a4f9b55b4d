"""The command line: ``rerelrp run`` learns a task sequence headless and writes its metrics (and, with
``--workspace``, the model); ``rerelrp predict`` classifies image files with a saved workspace;
``rerelrp report`` writes an explanation report of a saved workspace; ``rerelrp compare`` runs the
baselines beside ReReLRP; ``rerelrp unpack`` stores an .npz uncompressed so that it is read from disk."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rerelrp.clinical import format_accuracy
from rerelrp.errors import ConfigError, RerelrpError, StopRequested
from rerelrp.fileio import write_json_atomic


def build_parser():
    from rerelrp import settings
    from rerelrp.compare import METHODS as compare_methods
    from rerelrp.settings import COMPOSITES

    parser = argparse.ArgumentParser(prog="rerelrp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="learn a task sequence and write metrics.json and run.json",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--data", action="append", required=True,
                     help="'medical-demo' (bundled: chest X-ray, breast ultrasound, blood cells), 'demo' (digits), "
                          "a MedMNIST .npz path or flag (bloodmnist, bloodmnist_64), or a DICOM folder/zip; "
                          "repeat for a cross-domain sequence (one task per data set)")
    run.add_argument("--tasks", type=int, default=None,
                     help="split a single data set into this many tasks of consecutive classes (default: 2 classes per task)")
    run.add_argument("--out", required=True, type=Path, help="output folder")
    run.add_argument("--method", choices=[m for m in compare_methods if m != "rerelrp-maxsoftmax"], default="rerelrp",
                     help="finetune and joint are the lower and upper reference bounds; ewc, lwf, icarl and replay "
                          "the baselines of 'rerelrp compare' (docs/baselines.md)")
    settings.add_options(run.add_argument_group("learner settings (also the Train page's)"))
    run.add_argument("--data-root", default="./data", help="where MedMNIST flags are looked up")
    add_group_by(run)
    run.add_argument("--download", action="store_true", help="download missing MedMNIST files (network access)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--ood", action="append", default=[], metavar="DATA",
                     help="a data set of none of the tasks (same kinds as --data; its test split): after the last task "
                          "metrics.json gets an 'out_of_scope' block with the AUROC of the scope score; repeatable")
    run.add_argument("--workspace", default=None,
                     help="save the model here after every task (a bare name means ./workspaces/NAME); if it exists, "
                          "continue it: the data must give its tasks first, and its settings are used")
    run.set_defaults(handler=cmd_run)

    predict = sub.add_parser("predict", help="classify PNG, JPEG or DICOM files, folders or an .npz with a saved "
                             "workspace; one CSV row per image",
                             description="One CSV row per image: source, index, task, task_name, class_index, "
                                         "class_name, out_of_scope, scope_score and p_task_<k> for every task. Files "
                                         "that cannot be read are listed with the reason and skipped.")
    predict.add_argument("--workspace", required=True, help="workspace folder, or a bare name under ./workspaces")
    predict.add_argument("paths", nargs="+", metavar="PATH",
                         help="image files, folders of them (recursive), or .npz data sets (their --split)")
    predict.add_argument("--out", required=True, type=Path, help="CSV file to write")
    predict.add_argument("--split", choices=("train", "val", "test"), default="test", help="the split of an .npz")
    predict.add_argument("--explain", type=Path, default=None, metavar="DIR",
                         help="also write every image's heatmap (one PNG per sub-network) into DIR")
    predict.add_argument("--scope-rate", type=float, default=None,
                         help="share of a task's own validation images the out-of-scope check may reject "
                              "(default: the workspace's)")
    predict.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: the workspace's)")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(handler=cmd_predict)

    report = sub.add_parser("report", help="write an explanation report (HTML or PDF) of a saved workspace",
                            description="Write one self-contained HTML file or a PDF: task sequence and data "
                                        "provenance, settings, accuracy matrices and forgetting, capacity per layer, "
                                        "task recognition and relevance heatmaps of the chosen images, versions and "
                                        "seeds, and a privacy statement. The chosen images are the only ones written.")
    report.add_argument("--workspace", required=True, help="workspace folder, or a bare name under ./workspaces")
    report.add_argument("--format", choices=("html", "pdf"), default=None,
                        help="report format (default: from the suffix of --out)")
    report.add_argument("--out", required=True, type=Path, help="report file to write")
    report.add_argument("--samples", nargs="+", default=None, metavar="SAMPLE",
                        help="images to explain: TASK:INDEX (test image INDEX of task TASK, re-loaded from the "
                             "workspace's data sources and checked against their hashes) or PNG/JPEG/DICOM file paths; "
                             "'none' for no images (default: 2 test images per task, at most 8)")
    report.add_argument("--composite", choices=COMPOSITES, default=None,
                        help="LRP composite for the heatmaps (default: the workspace's)")
    report.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: the workspace's)")
    report.add_argument("--title", default=None, help="report title")
    report.add_argument("--compare", type=Path, default=None, metavar="FILE",
                        help="a compare.json of 'rerelrp compare' to add as a table (default: the workspace's "
                             "compare.json, if the app's Compare page wrote one)")
    report.set_defaults(handler=cmd_report)
    compare = sub.add_parser("compare", help="run ReReLRP and the baselines (fine-tune, EWC, LwF, iCaRL, replay, joint) "
                             "on the same task sequence for several seeds and write a comparison",
                             description="Writes DIR/compare.json (one record per method and seed), DIR/compare.md "
                                         "(mean ± sd per method) and DIR/compare.html (TAg after each task per method).",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    compare.add_argument("--data", action="append", required=True, help="as for 'rerelrp run'")
    compare.add_argument("--tasks", type=int, default=None, help="as for 'rerelrp run'")
    compare.add_argument("--methods", default=",".join(compare_methods),
                         help=f"comma-separated, from: {', '.join(compare_methods)} (rerelrp-maxsoftmax: ReReLRP's "
                              "sub-networks with the task of the most confident one, no recognisers)")
    compare.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; every method runs once per seed")
    compare.add_argument("--exemplars-per-class", type=int, default=20,
                         help="images per class that replay and iCaRL keep (ReReLRP and the others keep none)")
    compare.add_argument("--out", required=True, type=Path, help="output folder")
    settings.add_options(compare.add_argument_group("learner settings, shared by every method (--seed is --seeds here)"))
    compare.add_argument("--data-root", default="./data", help="where MedMNIST flags are looked up")
    add_group_by(compare)
    compare.add_argument("--download", action="store_true", help="download missing MedMNIST files (network access)")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.add_argument("--jobs", type=int, default=1, metavar="N",
                         help="run N runs at once in worker processes on this machine (joblib); 1: one after another "
                              "in this process")
    compare.add_argument("--threads", type=int, default=None, metavar="T",
                         help="torch threads per run (default: torch's choice with --jobs 1, cores / N with --jobs N, "
                              "the workers' own with --cluster); the same T gives the same figures wherever runs run")
    compare.add_argument("--cluster", default=None, metavar="tcp://HOST:PORT",
                         help="send the runs to this Dask distributed scheduler instead (pip install 'rerelrp[cluster]'); "
                              "every worker needs the same rerelrp and the data at the same paths (docs/cluster.md)")
    compare.set_defaults(handler=cmd_compare)
    unpack = sub.add_parser("unpack", help="copy an .npz with its arrays stored uncompressed, so that training reads "
                            "images from disk as it needs them instead of holding the whole file in memory",
                            description="MedMNIST ships compressed .npz files, which must be read whole. An uncompressed "
                                        "copy (about the size of the images) is memory-mapped: each task's images are "
                                        "read when it trains. This writes the images of SOURCE a second time, to TARGET.")
    unpack.add_argument("source", type=Path, help="an .npz file")
    unpack.add_argument("target", type=Path, help="the uncompressed copy to write (must not exist)")
    unpack.set_defaults(handler=cmd_unpack)
    parser.subcommands = {"run": run, "predict": predict, "report": report, "compare": compare, "unpack": unpack}
    return parser


def add_group_by(parser):
    from rerelrp.data.dicom import GROUP_BY

    parser.add_argument("--group-by", choices=GROUP_BY, default="auto",
                        help="DICOM folders: the unit kept whole in one split. auto: patient (PatientID), else study, "
                             "else series, else file, per class; a class with fewer than 3 such units falls back to the "
                             "next finer unit with a warning. MedMNIST files keep their official splits")


def explicit_options(argv, command):
    """The options given on the command line (not filled in from defaults) for ``command``."""
    parser = build_parser()
    for action in parser.subcommands[command]._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command", "handler"}


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
    from rerelrp import settings
    from rerelrp.baselines import make_baseline
    from rerelrp.data import build_sequence, expand_sources, load_dataset
    from rerelrp.learner import ReReLRP
    from rerelrp.runner import SequenceRun, run_record
    from rerelrp.settings import SETTINGS

    config = settings.from_options(args)
    workspace = learner = metrics = meta = None
    if args.workspace is not None:
        workspace, learner, metrics, meta = open_run_workspace(args, config)
    if learner is None and args.method == "rerelrp":
        learner = ReReLRP(**config)
    elif learner is None:
        unused = sorted(SETTINGS[name].option for name in args.explicit & set(config)
                        if not SETTINGS[name].applies_to(args.method))
        if unused:
            print(f"note: {', '.join(unused)} ignored: --method {args.method} has no such setting", file=sys.stderr)
        learner = make_baseline(args.method, **settings.for_method(config, args.method))
    learner.check_params()  # bad settings fail before any data is read
    seed = learner.seed  # a continued workspace splits its data with the seed it was made with
    datasets = []
    for source in expand_sources(args.data):
        ds = load_dataset(source, root=args.data_root, download=args.download, seed=seed, group_by=args.group_by)
        for skipped in (ds.report.skipped if ds.report else []):
            print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
        datasets.append(ds)
    tasks = build_sequence(datasets, args.tasks)
    if workspace is not None and meta is not None:
        from rerelrp.workspace import check_sequence

        check_sequence(workspace, learner, meta, tasks)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "run.json", run_record(learner, tasks, args.data, sys.argv, args.method)
                      | {"load_reports": [ds.report.to_dict() for ds in datasets if ds.report]})
    print(f"{len(tasks)} tasks on {learner.describe_device()}: " + ", ".join(f"{t.name} {t.class_names}" for t in tasks))
    run = SequenceRun(learner, tasks, metrics, workspace=workspace,
                      extra={"data": {"sources": list(args.data), "tasks": args.tasks}})
    if workspace is not None and run.n_learned:
        write_json_atomic(args.out / "metrics.json", run.metrics.to_dict())
        print(f"workspace {workspace}: {run.n_learned} task(s) already learned, "
              + (f"{len(tasks) - run.n_learned} to go" if not run.done else "every task of the sequence is already learned"))
    bars = PhaseBars(not args.quiet)
    try:
        while not run.done:
            summary = run.step(callback=bars)
            bars.close()
            write_json_atomic(args.out / "metrics.json", run.metrics.to_dict())
            i = summary.task
            for warning in summary.warnings:  # printed even with --quiet
                print(f"WARNING task {i}: {warning}", file=sys.stderr)
            seconds = " ".join(f"{k} {v:.1f}s" for k, v in run.metrics.seconds[-1].items())
            print(f"task {i} {summary.name}: TAg {run.metrics.tag_after_each_task()[-1]:.2f}  "
                  f"TAw {sum(run.metrics.acc_taw[-1]) / (i + 1):.2f}  "
                  f"recognition {run.metrics.task_recognition[-1]:.1f}%  ({seconds})")
            print_task_figures(run.metrics)
    finally:
        bars.close()
    if args.ood and run.n_learned:
        run.metrics.out_of_scope = scope_blocks(learner, tasks, args, seed)
        write_json_atomic(args.out / "metrics.json", run.metrics.to_dict())
        for block in run.metrics.out_of_scope:
            print(f"out of scope {block['source']}: AUROC {block['auroc']:.4f}, flagged {block['flagged_out_of_scope']:.1%} "
                  f"of {block['n_out_of_scope']} (in scope: {block['flagged_in_scope']:.1%} of {block['n_in_scope']})")
    final = run.metrics.final()
    if final:
        n = sum(run.metrics.latest.get("n_test", []))
        print(f"final: TAg {format_accuracy(final['tag'], final.get('tag_ci95'), n)}\n"
              f"       TAw {format_accuracy(final['taw'], final.get('taw_ci95'), n)}\n"
              f"       forgetting TAg {final['forgetting_tag']:.2f}  TAw {final['forgetting_taw']:.2f}  "
              f"-> {args.out / 'metrics.json'}")
    if workspace is not None:
        print(f"workspace: {workspace} ({learner.n_tasks} task(s))")
    return 0


def print_task_figures(metrics):
    """Each learned task's TAw with its 95 % interval and number of test images (after the latest task)."""
    latest = metrics.latest
    for j, task in enumerate(metrics.tasks):
        figure = format_accuracy(metrics.acc_taw[-1][j], latest["taw_ci95"][j], latest["n_test"][j])
        print(f"    task {j} {task['name']}: TAw {figure}")


def scope_blocks(learner, tasks, args, seed):
    """The AUROC block of each ``--ood`` data set against the test images of the learned tasks."""
    from rerelrp.data import load_dataset
    from rerelrp.scope import evaluate_scope

    foreign = {source: load_dataset(source, root=args.data_root, download=args.download, seed=seed,
                                    group_by=args.group_by).test.images
               for source in args.ood}
    return evaluate_scope(learner, tasks, foreign)


def cmd_compare(args):
    from dataclasses import replace

    from tqdm import tqdm

    from rerelrp import settings
    from rerelrp.compare import compare, markdown, parse_methods, parse_seeds, plan, write_comparison
    from rerelrp.parallel import TaskRecipe, check

    methods, seeds = parse_methods(args.methods), parse_seeds(args.seeds)  # bad names fail before any work
    if args.exemplars_per_class < 1:
        raise ConfigError(f"--exemplars-per-class must be at least 1, not {args.exemplars_per_class}")
    check(args.jobs, args.threads, args.cluster)
    if args.cluster and args.download:
        raise ConfigError("--download with --cluster: download the files once into the folder the workers share "
                          "(e.g. 'rerelrp compare ... --download' without --cluster), then give that --data-root")
    params = settings.check(settings.from_options(args))
    recipe = TaskRecipe.of(args.data, args.tasks, args.data_root, args.group_by, args.download)
    first = None
    if not args.cluster:  # the data is read here first: bad sources fail (and downloads happen) before any run
        first = recipe(seeds[0])
    recipe = replace(recipe, download=False)  # every file is here now; workers never download at once
    load_tasks = (lambda seed: first if seed == seeds[0] else recipe(seed)) if args.jobs == 1 and first else recipe
    where = (f"on the Dask scheduler at {args.cluster}" if args.cluster else
             f"in {args.jobs} worker processes" if args.jobs > 1 else "one after another")
    print(f"{len(plan(methods, seeds))} run(s)" + (f" of {len(first)} tasks" if first else "") + f" {where}"
          + (f", {args.threads} torch thread(s) each" if args.threads else "")
          + f": methods {', '.join(methods)}; seeds {', '.join(map(str, seeds))}")
    args.out.mkdir(parents=True, exist_ok=True)
    bars, phases = {}, PhaseBars(not args.quiet)

    def on_task(method, seed, learned):
        if (method, seed) not in bars:
            bars[method, seed] = tqdm(total=len(first) if first else None, desc=f"{method} seed {seed}", unit="task",
                                      disable=args.quiet, file=sys.stderr)
        bars[method, seed].update(learned - bars[method, seed].n)

    def on_run(record):
        if (record["method"], record["seed"]) in bars:
            bars.pop((record["method"], record["seed"])).close()
        f = record["final"]
        tqdm.write(f"{record['method']} seed {record['seed']}: TAg {f['tag']:.2f}  TAw {f['taw']:.2f}  forgetting TAg "
                   f"{f['forgetting_tag']:.2f}  TAw {f['forgetting_taw']:.2f}  stored {record['images_stored']} image(s), "
                   f"{record['bytes_stored'] / 1024:.0f} KiB  ({record['seconds']:.0f} s)")

    try:
        result = compare(load_tasks, methods, seeds, params, args.exemplars_per_class, callback=phases,
                         on_run=on_run, on_task=on_task, jobs=args.jobs, threads=args.threads, cluster=args.cluster)
    finally:
        phases.close()
        for bar in bars.values():
            bar.close()
    paths = write_comparison(result, args.out)
    print(markdown(result) + "-> " + ", ".join(str(p) for p in paths))
    return 0


def cmd_predict(args):
    from tqdm import tqdm

    from rerelrp.batch_predict import collect, predict_files
    from rerelrp.workspace import load_workspace, resolve_workspace

    learner, _, _ = load_workspace(resolve_workspace(args.workspace), device=args.device)
    if args.scope_rate is not None:
        learner.set_params(scope_rate=args.scope_rate).check_params()
    items, skipped = collect(args.paths, args.split, dicom_size=learner.input_size_)
    for skip in skipped:
        print(f"skipped {skip.path}: {skip.reason}", file=sys.stderr)
    if not items:
        raise ConfigError(f"no readable image among {len(args.paths)} path(s); nothing written")
    with tqdm(total=len(items), desc="predict", unit="img", disable=args.quiet, file=sys.stderr) as bar:
        rows = predict_files(learner, items, args.out, args.explain, progress=bar.update)
    flagged = sum(row["out_of_scope"] for row in rows)
    print(f"{len(rows)} image(s) -> {args.out}: {flagged} out of scope (none of the {learner.n_tasks} learned tasks)"
          + (f"; {len(skipped)} file(s) skipped" if skipped else "")
          + (f"; heatmaps in {args.explain}" if args.explain else ""))
    return 0


def open_run_workspace(args, config):
    """``(path, learner or None, metrics or None, meta or None)`` for ``run --workspace``.

    An existing workspace is loaded to be continued: its settings win, and settings given on the
    command line that differ from them are reported on stderr.
    """
    from rerelrp.workspace import check_target, is_workspace, load_workspace, resolve_workspace

    if args.method != "rerelrp":
        raise ConfigError(f"--workspace saves ReReLRP models; --method {args.method} is a reference run without one")
    path = resolve_workspace(args.workspace)
    if not is_workspace(path):
        check_target(path)
        print(f"new workspace: {path}")
        return path, None, None, None
    from rerelrp.settings import SETTINGS

    given = getattr(args, "explicit", set())
    learner, metrics, meta = load_workspace(path, device=args.device if "device" in given else None)
    saved = learner.get_params()
    for name, setting in SETTINGS.items():
        if name in given and name != "device" and config[name] != saved[name]:
            print(f"note: {setting.option} {config[name]} ignored: workspace {path} was made with {name}={saved[name]} "
                  "and continues with its own settings", file=sys.stderr)
    return path, learner, metrics, meta


def cmd_report(args):
    from rerelrp.report import make_report

    fmt = args.format or {".html": "html", ".htm": "html", ".pdf": "pdf"}.get(args.out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the report format from '{args.out}': add --format html or --format pdf")
    result = make_report(args.workspace, args.out, fmt, samples=args.samples, composite=args.composite,
                         device=args.device, title=args.title, comparison=args.compare)
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"{fmt.upper()} report of {result['workspace']} with {result['n_samples']} sample image(s): {result['path']} "
          f"({result['bytes'] / 1024:.0f} KiB, {result['seconds']:.1f} s)")
    return 0


def cmd_unpack(args):
    import zipfile

    from rerelrp.data.npz_archive import unpack
    from rerelrp.errors import DataError

    if args.target.exists():
        raise DataError(args.target, "exists; choose a new file name (nothing was written)")
    if not args.source.is_file():
        raise DataError(args.source, "file not found")
    args.target.parent.mkdir(parents=True, exist_ok=True)
    try:
        unpack(args.source, args.target)
    except (zipfile.BadZipFile, EOFError) as exc:
        args.target.unlink(missing_ok=True)
        raise DataError(args.source, f"not a readable .npz archive ({exc}); nothing was written") from exc
    except OSError as exc:
        args.target.unlink(missing_ok=True)
        raise DataError(args.target, f"could not be written ({exc}); nothing was kept") from exc
    print(f"{args.target}: {args.target.stat().st_size / 2**20:.0f} MiB, stored uncompressed (read from disk as needed)")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit = explicit_options(sys.argv[1:] if argv is None else list(argv), args.command)
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
