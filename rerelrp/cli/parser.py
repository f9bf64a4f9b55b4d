"""The ``rerelrp`` command line's options: one sub-parser per command, each option with its default and help."""
from __future__ import annotations

import argparse
from pathlib import Path

import rerelrp.settings as settings
from rerelrp.cli.commands import cmd_compare, cmd_predict, cmd_report, cmd_run, cmd_unpack
from rerelrp.cli.workspace_commands import add_workspace_parsers
from rerelrp.data.dicom import GROUP_BY
from rerelrp.run.method_run import METHODS as compare_methods
from rerelrp.settings import COMPOSITES

DESCRIPTION = """The command line: ``rerelrp run`` learns a task sequence headless and writes its metrics (and, with
``--workspace``, the model); ``rerelrp predict`` classifies image files with a saved workspace;
``rerelrp report`` writes an explanation report of a saved workspace; ``rerelrp compare`` runs the
baselines beside ReReLRP; ``rerelrp unpack`` stores an .npz uncompressed so that it is read from disk;
``rerelrp undo`` takes a workspace back one task; ``rerelrp export`` / ``import`` carry one as a zip file."""


def build_parser():
    parser = argparse.ArgumentParser(prog="rerelrp", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    parser.subcommands = {"run": _run_parser(sub), "predict": _predict_parser(sub), "report": _report_parser(sub),
                          "compare": _compare_parser(sub), "unpack": _unpack_parser(sub),
                          **add_workspace_parsers(sub)}
    return parser


def _run_parser(sub):
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

    return run


def _predict_parser(sub):
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

    return predict


def _report_parser(sub):
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
                             "data sources the workspace records and checked against their hashes), 'auto' (2 test "
                             "images per task, at most 8, from the same sources) or PNG/JPEG/DICOM file paths "
                             "(default: none; the recorded sources are read only when asked for)")
    report.add_argument("--composite", choices=COMPOSITES, default=None,
                        help="LRP composite for the heatmaps (default: the workspace's)")
    report.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: the workspace's)")
    report.add_argument("--title", default=None, help="report title")
    report.add_argument("--compare", type=Path, default=None, metavar="FILE",
                        help="a compare.json of 'rerelrp compare' to add as a table (default: the workspace's "
                             "compare.json, if the app's Compare page wrote one)")
    report.set_defaults(handler=cmd_report)
    return report


def _compare_parser(sub):
    compare = sub.add_parser("compare", help="run ReReLRP and the baselines (fine-tune, EWC, LwF, iCaRL, replay, joint) "
                             "on the same task sequence for several seeds and write a comparison",
                             description="Writes DIR/compare.json (one record per method and seed), DIR/compare.md "
                                         "(mean ± sd per method) and DIR/compare.html (TAg after each task per method).",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    compare.add_argument("--data", action="append", required=True, help="as for 'rerelrp run'")
    compare.add_argument("--tasks", type=int, default=None, help="as for 'rerelrp run'")
    compare.add_argument("--methods", default=",".join(compare_methods),
                         help=f"comma-separated, from: {', '.join(compare_methods)} (rerelrp-maxsoftmax: ReReLRP's "
                              "sub-networks with the task of the most confident one, no recognisers; "
                              "replay-equal-bytes: replay whose memory takes as many bytes as ReReLRP's recognition "
                              "store of the same seed, run after it)")
    compare.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; every method runs once per seed")
    compare.add_argument("--exemplars-per-class", type=int, default=20,
                         help="replay and iCaRL keep a fixed memory of this many images per class of the sequence "
                              "(160 for 8 classes), held from the first task on and shared among the classes seen "
                              "so far (ReReLRP and the others keep none)")
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
    return compare


def _unpack_parser(sub):
    unpack = sub.add_parser("unpack", help="copy an .npz with its arrays stored uncompressed, so that training reads "
                            "images from disk as it needs them instead of holding the whole file in memory",
                            description="MedMNIST ships compressed .npz files, which must be read whole. An uncompressed "
                                        "copy (about the size of the images) is memory-mapped: each task's images are "
                                        "read when it trains. This writes the images of SOURCE a second time, to TARGET.")
    unpack.add_argument("source", type=Path, help="an .npz file")
    unpack.add_argument("target", type=Path, help="the uncompressed copy to write (must not exist)")
    unpack.set_defaults(handler=cmd_unpack)
    return unpack


def add_group_by(parser):
    parser.add_argument("--group-by", choices=GROUP_BY, default="auto",
                        help="DICOM folders: the unit kept whole in one split. auto: patient (PatientID), else study, "
                             "else series, else file, per class; a class with fewer than 3 such units falls back to the "
                             "next finer unit with a warning. MedMNIST files keep their official splits")


def explicit_options(argv, command):
    """The options given on the command line (not filled in from defaults) for ``command``.

    A first parse names every option of the command; a second, whose defaults are all an empty
    :class:`_Unset` (``set_defaults``), shows which of them the command line set. An ``append``
    option copies its default and appends to the copy, so it is given when that copy is not empty.
    """
    names = vars(build_parser().parse_args(argv))
    parser = build_parser()
    parser.subcommands[command].set_defaults(**{name: _Unset() for name in names})
    given = vars(parser.parse_args(argv))
    return {name for name, value in given.items() if not (isinstance(value, _Unset) and not value)} - {"command",
                                                                                                        "handler"}


class _Unset(list):
    """The default of every option in :func:`explicit_options`' second parse (a list, for ``append`` options)."""
