"""``rerelrp undo``, ``rerelrp export`` and ``rerelrp import``: a saved workspace one task back, as one file, and back.

Their options and handlers live together here; :mod:`rerelrp.cli.parser` adds them to the parser.
Errors are :class:`~rerelrp.errors.WorkspaceError`, printed by :func:`rerelrp.cli.main` (exit 2).
"""
from __future__ import annotations

from pathlib import Path

from rerelrp.store.workspace import export_workspace, import_workspace, resolve_workspace, undo_last_task
from rerelrp.text import printable

WORKSPACE_HELP = "workspace folder, or a bare name under ./workspaces"


def cmd_undo(args):
    result = undo_last_task(resolve_workspace(args.workspace))
    left = ", ".join(result["task_names"])
    print(f"workspace {printable(result['workspace'])}: undid task {result['n_tasks']} ({result['undone']}); "
          f"{result['n_tasks']} task(s) left: {left} (snapshot {result['snapshot']})")
    return 0


def cmd_export(args):
    result = export_workspace(resolve_workspace(args.workspace), args.out, overwrite=args.overwrite)
    print(f"workspace {printable(result['workspace'])} ({result['n_tasks']} task(s): {', '.join(result['task_names'])}; "
          f"snapshot {result['snapshot']}) -> {printable(result['archive'])} ({result['bytes'] / 1024:.0f} KiB, "
          f"{result['entries']} files)")
    return 0


def cmd_import(args):
    info = import_workspace(args.archive, resolve_workspace(args.workspace))
    print(f"{printable(args.archive)} -> workspace {printable(info['path'])}: {info['n_tasks']} task(s): "
          f"{', '.join(info['task_names'])}")
    return 0


def add_workspace_parsers(sub):
    """The three sub-parsers, by command name."""
    undo = sub.add_parser("undo", help="return a workspace to the snapshot saved before its last task",
                          description="The workspace's CURRENT is switched atomically to the snapshot saved one task "
                                      "earlier, which is verified first; the undone snapshot is deleted. A workspace "
                                      "keeps its last 2 snapshots, so one task can be undone after each save.")
    undo.add_argument("--workspace", required=True, help=WORKSPACE_HELP)
    undo.set_defaults(handler=cmd_undo)
    export = sub.add_parser("export", help="write a workspace's current snapshot as one zip file",
                            description="Writes the current snapshot (verified against its checksums) and the "
                                        "workspace's compare.json, if any, as one zip file, atomically.")
    export.add_argument("--workspace", required=True, help=WORKSPACE_HELP)
    export.add_argument("--out", required=True, type=Path, help="the archive to write (.zip)")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    export.set_defaults(handler=cmd_export)
    imp = sub.add_parser("import", help="unpack an archive of 'rerelrp export' into a new workspace",
                         description="Every entry is checked (paths, types, sizes) before anything is unpacked; the "
                                     "result is opened like any workspace before it gets its name. An existing "
                                     "workspace is never replaced.")
    imp.add_argument("--archive", required=True, type=Path, help="a .zip written by 'rerelrp export'")
    imp.add_argument("--workspace", required=True, help="the new workspace: a folder, or a bare name under ./workspaces")
    imp.set_defaults(handler=cmd_import)
    return {"undo": undo, "export": export, "import": imp}
