"""What each ``rerelrp`` command does once its options are parsed; errors a user can cause are RerelrpErrors."""
from __future__ import annotations

import sys

from rerelrp import settings
from rerelrp.baselines import make_baseline
from rerelrp.cli.output import PhaseBars, print_final, print_task_figures
from rerelrp.data import build_sequence, expand_sources, load_dataset
from rerelrp.data.npz_archive import unpack
from rerelrp.errors import ConfigError, DataError
from rerelrp.fileio import write_json_atomic
from rerelrp.method.learner import ReReLRP
from rerelrp.method.scope import evaluate_scope
from rerelrp.report import make_report
from rerelrp.run.batch_predict import collect, predict_files
from rerelrp.run.compare import compare, markdown, parse_methods, parse_seeds, plan, write_comparison
from rerelrp.run.method_run import TaskRecipe
from rerelrp.run.parallel import check
from rerelrp.run.runner import SequenceRun, run_record
from rerelrp.settings import SETTINGS
from rerelrp.store.workspace import check_sequence, check_target, is_workspace, load_workspace, resolve_workspace


def cmd_run(args):
    config = settings.from_options(args)
    workspace = learner = metrics = meta = None
    if args.workspace is not None:
        workspace, learner, metrics, meta = open_run_workspace(args, config)
    learner = (learner or new_learner(args, config)).check_params()  # bad settings fail before any data is read
    datasets = load_run_data(args, learner.seed)  # a continued workspace splits its data with the seed it was made with
    tasks = build_sequence(datasets, args.tasks)
    if "memory_size" in learner.param_defaults():  # replay and iCaRL: the fixed memory 'rerelrp compare' gives them
        learner.set_params(memory_size=learner.exemplars_per_class * sum(t.n_classes for t in tasks))
    if workspace is not None and meta is not None:
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
    learn_all(run, args)
    if args.ood and run.n_learned:
        run.metrics.out_of_scope = scope_blocks(learner, tasks, args, learner.seed)
        write_json_atomic(args.out / "metrics.json", run.metrics.to_dict())
        for block in run.metrics.out_of_scope:
            print(f"out of scope {block['source']}: AUROC {block['auroc']:.4f}, flagged {block['flagged_out_of_scope']:.1%} "
                  f"of {block['n_out_of_scope']} (in scope: {block['flagged_in_scope']:.1%} of {block['n_in_scope']})")
    print_final(run.metrics, args.out / "metrics.json")
    if workspace is not None:
        print(f"workspace: {workspace} ({learner.n_tasks} task(s))")
    return 0


def new_learner(args, config):
    """The learner ``--method`` names; a setting given that the method does not have is noted, not used."""
    if args.method == "rerelrp":
        return ReReLRP(**config)
    unused = sorted(SETTINGS[name].option for name in args.explicit & set(config)
                    if not SETTINGS[name].applies_to(args.method))
    if unused:
        print(f"note: {', '.join(unused)} ignored: --method {args.method} has no such setting", file=sys.stderr)
    return make_baseline(args.method, **settings.for_method(config, args.method))


def load_run_data(args, seed):
    """The ``--data`` sources as data sets; files a loader skipped are printed with the reason."""
    datasets = []
    for source in expand_sources(args.data):
        ds = load_dataset(source, root=args.data_root, download=args.download, seed=seed, group_by=args.group_by)
        for skipped in (ds.report.skipped if ds.report else []):
            print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
        datasets.append(ds)
    return datasets


def learn_all(run, args):
    """Every planned task, with progress bars, metrics.json after each, and each task's warnings and figures."""
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


def scope_blocks(learner, tasks, args, seed):
    """The AUROC block of each ``--ood`` data set against the test images of the learned tasks."""

    foreign = {source: load_dataset(source, root=args.data_root, download=args.download, seed=seed,
                                    group_by=args.group_by).test.images
               for source in args.ood}
    return evaluate_scope(learner, tasks, foreign)


def cmd_compare(args):
    from dataclasses import replace

    from tqdm import tqdm


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

    if args.method != "rerelrp":
        raise ConfigError(f"--workspace saves ReReLRP models; --method {args.method} is a reference run without one")
    path = resolve_workspace(args.workspace)
    if not is_workspace(path):
        check_target(path)
        print(f"new workspace: {path}")
        return path, None, None, None

    given = getattr(args, "explicit", set())
    learner, metrics, meta = load_workspace(path, device=args.device if "device" in given else None)
    saved = learner.get_params()
    for name, setting in SETTINGS.items():
        if name in given and name != "device" and config[name] != saved[name]:
            print(f"note: {setting.option} {config[name]} ignored: workspace {path} was made with {name}={saved[name]} "
                  "and continues with its own settings", file=sys.stderr)
    return path, learner, metrics, meta


def cmd_report(args):

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
