"""Undo the last task (bit for bit, atomic under kills, clear refusals) and a workspace as one zip archive
(round trip, and hostile archives refused quickly with nothing left behind)."""
import copy
import json
import os
import shutil
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from rerelrp.cli import main
from rerelrp.data import build_sequence, load_dataset
from rerelrp.errors import WorkspaceError
from rerelrp.method.learner import ReReLRP
from rerelrp.run.runner import SequenceRun
from rerelrp.store.workspace import (
    export_workspace,
    import_workspace,
    load_workspace,
    save_workspace,
    undo_last_task,
)

# test_workspace.py's tiny learner: min_free 0.5 makes layers grow between tasks, so undo must shrink them back
CONFIG = dict(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8,
              min_free=0.5, room_steps=0, device="cpu")  # layers grow (no fine-tune makes room)


@pytest.fixture(scope="module")
def tasks():
    return build_sequence([load_dataset("demo")], 3)


@pytest.fixture(scope="module")
def built(tasks, tmp_path_factory):
    """A workspace saved after each of 3 tasks (as the CLI and the app save), a copy of it after each task,
    and the in-memory learner and metrics after each task."""
    root = tmp_path_factory.mktemp("undo")
    run = SequenceRun(ReReLRP(**CONFIG), tasks, workspace=root / "ws")
    states = []
    for i in range(3):
        run.step()
        shutil.copytree(root / "ws", root / f"after-{i + 1}")
        states.append((copy.deepcopy(run.learner), copy.deepcopy(run.metrics)))
    return root, states


@pytest.fixture()
def ws(built, tmp_path):
    shutil.copytree(built[0] / "after-3", tmp_path / "ws")
    return tmp_path / "ws"


def probe(tasks):
    return np.concatenate([t.test.images[:15] for t in tasks])


def assert_same_model(a, b, tasks):
    """Every tensor, every recogniser's probabilities and the task recognition, bit for bit."""
    sa, sb = a.net_.state_dict(), b.net_.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    assert a.ledger_.layer_sizes == b.ledger_.layer_sizes and a.tasks_ == b.tasks_
    assert len(a.recognizers_) == len(b.recognizers_)
    sa, sb = a.store_.to_arrays(), b.store_.to_arrays()
    assert list(sa) == list(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)
    rng = np.random.default_rng(0)
    for fa, fb in zip(a.recognizers_, b.recognizers_):
        x = rng.normal(size=(32, fa.n_features_in_)).astype(np.float32)
        assert np.array_equal(fa.predict_proba(x), fb.predict_proba(x))
    pa, pb = a.predict(probe(tasks)), b.predict(probe(tasks))
    for field in ("p_task", "task", "global_class", "subnet_class"):
        assert np.array_equal(getattr(pa, field), getattr(pb, field)), field


def snapshots(path):
    return sorted(p.name for p in (path / "snapshots").iterdir())


def jsonable(metrics):
    return json.loads(json.dumps(metrics.to_dict()))


# --------------------------------------------------------------------------- undo
def test_undo_returns_to_the_previous_task_bit_for_bit_and_the_task_can_be_learned_again(built, tasks, ws):
    root, states = built
    result = undo_last_task(ws)
    assert result["undone"] == tasks[2].name and result["n_tasks"] == 2
    assert result["task_names"] == [tasks[0].name, tasks[1].name] and result["snapshot"] == "snap-000002"
    assert snapshots(ws) == ["snap-000002"]  # the undone snapshot is gone
    loaded, metrics, meta = load_workspace(ws)
    saved_before, saved_metrics, _ = load_workspace(root / "after-2")
    assert_same_model(saved_before, loaded, tasks)
    assert_same_model(states[1][0], loaded, tasks)
    assert metrics.to_dict() == saved_metrics.to_dict() == jsonable(states[1][1])
    # learning the third task again gives the model it had before the undo, bit for bit
    run = SequenceRun(loaded, tasks, metrics, workspace=ws)
    run.step()
    assert_same_model(states[2][0], load_workspace(ws)[0], tasks)
    assert snapshots(ws) == ["snap-000002", "snap-000003"]


def test_a_second_undo_is_refused_because_the_snapshot_was_not_kept(ws):
    undo_last_task(ws)
    before = (ws / "CURRENT").read_bytes()
    with pytest.raises(WorkspaceError, match="was not kept.*last 2 snapshots.*rerelrp export") as info:
        undo_last_task(ws)
    assert str(ws) in str(info.value)
    assert (ws / "CURRENT").read_bytes() == before and load_workspace(ws)[0].n_tasks == 2


def test_undo_of_the_only_task_is_refused(built, tmp_path, tasks):
    ws = shutil.copytree(built[0] / "after-1", tmp_path / "one")
    with pytest.raises(WorkspaceError, match=f"one learned task only \\({tasks[0].name}\\)") as info:
        undo_last_task(ws)
    assert info.value.path == str(ws)
    assert load_workspace(ws)[0].n_tasks == 1
    with pytest.raises(WorkspaceError, match="no such folder"):
        undo_last_task(tmp_path / "missing")


def test_undo_passes_over_a_snapshot_saved_again_without_a_new_task(built, ws):
    learner3, metrics3 = built[1][2]
    save_workspace(ws, learner3, metrics3)  # snap-000004: the same 3 tasks; snap-000002 (2 tasks) is pruned
    with pytest.raises(WorkspaceError, match="first 2 task\\(s\\) was not kept"):
        undo_last_task(ws)
    other = shutil.copytree(built[0] / "after-3", ws.parent / "keep3")
    save_workspace(other, learner3, metrics3, keep=3)  # keeps snap-000002, -03 and -04
    assert undo_last_task(other)["snapshot"] == "snap-000002"
    assert snapshots(other) == ["snap-000002"]


def test_undo_refuses_a_corrupt_previous_snapshot_and_changes_nothing(ws):
    target = ws / "snapshots" / "snap-000002" / "network.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WorkspaceError, match="checksum mismatch") as info:
        undo_last_task(ws)
    assert info.value.file == "snapshots/snap-000002/network.safetensors"
    assert load_workspace(ws)[0].n_tasks == 3


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def forked(work):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work()
        except BaseException:  # noqa: BLE001 - the child must end here whatever happens
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@needs_fork
@pytest.mark.parametrize("stage,tasks_after", [("verified", 3), ("current-tmp", 3), ("current-switched", 2),
                                               ("undone-renamed", 2), ("done", 2)])
def test_undo_killed_at_any_point_leaves_a_loadable_workspace(built, tasks, ws, stage, tasks_after):
    from rerelrp import fileio
    from rerelrp.store.workspace import undo

    def killed_undo():
        if stage == "current-tmp":  # inside the atomic replace of CURRENT, before its rename
            real = os.replace
            fileio.os.replace = lambda a, b: os._exit(9) if str(b).endswith("CURRENT") else real(a, b)
        else:
            undo.checkpoint = lambda name: os._exit(9) if name == stage else None
        undo_last_task(ws)
        os._exit(9)

    assert forked(killed_undo) == 9
    loaded, metrics, _ = load_workspace(ws)
    assert loaded.n_tasks == tasks_after and len(metrics.acc_tag) == tasks_after
    assert_same_model(built[1][tasks_after - 1][0], loaded, tasks)
    # the next save removes what the killed undo left (an undone snapshot no pointer names, a .tmp- folder)
    learner3, metrics3 = built[1][2]
    save_workspace(ws, learner3, metrics3)
    assert not [n for n in snapshots(ws) if n.startswith(".tmp-")]
    if tasks_after == 2:
        assert snapshots(ws) == ["snap-000002", "snap-000003"] and undo_last_task(ws)["n_tasks"] == 2


def test_cli_undo(ws, tasks, capsys):
    assert main(["undo", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert f"undid task 2 ({tasks[2].name}); 2 task(s) left: {tasks[0].name}, {tasks[1].name}" in out
    assert main(["undo", "--workspace", str(ws)]) == 2
    assert "error: workspace" in capsys.readouterr().err


# --------------------------------------------------------------------------- export / import
def test_export_import_round_trip_and_the_import_continues(built, tasks, tmp_path):
    root, states = built
    ws = shutil.copytree(root / "after-2", tmp_path / "ws")
    (ws / "compare.json").write_text(json.dumps({"methods": ["rerelrp"], "runs": [], "tasks": ["a"]}))
    archive = tmp_path / "out" / "ws.zip"
    result = export_workspace(ws, archive)
    assert result["n_tasks"] == 2 and result["snapshot"] == "snap-000002" and result["bytes"] == archive.stat().st_size
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert names[:2] == ["CURRENT", "snapshots/snap-000002/manifest.json"] and "compare.json" in names
    assert not any(n.startswith("snapshots/snap-000001") for n in names)  # the current snapshot only
    again = tmp_path / "again.zip"
    export_workspace(ws, again)
    assert again.read_bytes() == archive.read_bytes()  # the same workspace gives the same archive
    with pytest.raises(WorkspaceError, match="exists"):
        export_workspace(ws, archive)

    info = import_workspace(archive, tmp_path / "imported")
    target = tmp_path / "imported"
    assert info["n_tasks"] == 2 and info["task_names"] == [tasks[0].name, tasks[1].name]
    assert (target / "compare.json").read_bytes() == (ws / "compare.json").read_bytes()
    loaded, metrics, _ = load_workspace(target)
    assert_same_model(states[1][0], loaded, tasks)
    assert metrics.to_dict() == load_workspace(ws)[1].to_dict()
    SequenceRun(loaded, tasks, metrics, workspace=target).step()  # the imported workspace is used on
    assert_same_model(states[2][0], load_workspace(target)[0], tasks)
    assert snapshots(target) == ["snap-000002", "snap-000003"] and undo_last_task(target)["n_tasks"] == 2
    with pytest.raises(WorkspaceError, match="exists; import into a new workspace name"):
        import_workspace(archive, target)  # never over an existing workspace
    assert load_workspace(target)[0].n_tasks == 2


def members(archive):
    with zipfile.ZipFile(archive) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def write_zip(path, entries, declared=None):
    """A zip of ``(ZipInfo or name, bytes)``; ``declared`` maps names to the uncompressed size the central
    directory claims (what a crafted archive lies about)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
        for info in zf.filelist:
            if declared and info.filename in declared:
                info.file_size = declared[info.filename]
    return path


def link_entry(name, kind=stat.S_IFLNK):
    info = zipfile.ZipInfo(name)
    info.create_system, info.external_attr = 3, (kind | 0o777) << 16
    return info


@pytest.fixture(scope="module")
def good(built, tmp_path_factory):
    return Path(export_workspace(built[0] / "after-2", tmp_path_factory.mktemp("archive") / "good.zip")["archive"])


SNAP = "snapshots/snap-000002"


def _hostile(kind, good, folder):
    entries = members(good)
    if kind == "traversal":
        return write_zip(folder / "a.zip", entries + [("../../evil.txt", b"x")])
    if kind == "absolute":
        return write_zip(folder / "a.zip", entries + [("/tmp/evil.txt", b"x")])
    if kind == "symlink":  # a link member in place of a real file
        return write_zip(folder / "a.zip", [(i, d) for i, d in entries if not i.filename.endswith("learner.json")]
                         + [(link_entry(f"{SNAP}/learner.json"), b"/etc/passwd")])
    if kind == "device":
        return write_zip(folder / "a.zip", entries + [(link_entry(f"{SNAP}/estimators/dev.skops", stat.S_IFCHR), b"")])
    if kind == "foreign":
        return write_zip(folder / "a.zip", entries + [(f"{SNAP}/payload.py", b"import os")])
    if kind == "many":
        return write_zip(folder / "a.zip", entries + [(f"{SNAP}/estimators/r{i}.skops", b"") for i in range(4200)])
    if kind == "bomb-entry":  # the central directory declares a terabyte
        return write_zip(folder / "a.zip", entries, {f"{SNAP}/metrics.json": 1 << 40})
    if kind == "bomb-total":  # each entry within its limit, together far beyond
        extra = [(f"{SNAP}/estimators/r{i}.skops", b"") for i in range(5)]
        return write_zip(folder / "a.zip", entries + extra, {name: 4 << 30 for name, _ in extra})
    if kind == "bomb-lying":  # declares 100 bytes, inflates to 64 MiB
        return write_zip(folder / "a.zip", entries + [("compare.json", bytes(64 << 20))], {"compare.json": 100})
    if kind == "truncated":
        data = good.read_bytes()
        (folder / "a.zip").write_bytes(data[: len(data) // 2])
        return folder / "a.zip"
    if kind == "not-an-archive":
        (folder / "a.zip").write_text("name,label\nscan1.png,0\n")
        return folder / "a.zip"
    if kind == "tampered":  # a valid zip whose weights were changed: the workspace's own checks refuse it
        changed = [(i, d[:-1] + bytes([d[-1] ^ 1]) if i.filename.endswith("network.safetensors") else d)
                   for i, d in entries]
        return write_zip(folder / "a.zip", changed)
    if kind == "no-current":
        return write_zip(folder / "a.zip", [(i, d) for i, d in entries if i.filename != "CURRENT"])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,message", [
    ("traversal", "path traversal"),
    ("absolute", "path traversal"),
    ("symlink", "is a symbolic link"),
    ("device", "is a character device"),
    ("foreign", "not a file of a workspace"),
    ("many", "entries; a workspace archive has at most"),
    ("bomb-entry", "declares 1,099,511,627,776 bytes"),
    ("bomb-total", "uncompressed in all"),
    ("bomb-lying", "damaged or truncated|more bytes than it declares"),
    ("truncated", "not a zip file, or a truncated one"),
    ("not-an-archive", "not a zip file, or a truncated one"),
    ("tampered", "does not hold a valid workspace: checksum mismatch"),
    ("no-current", "holds no CURRENT"),
])
def test_hostile_archives_are_refused_quickly_leaving_nothing(good, tmp_path, kind, message):
    archive = _hostile(kind, good, tmp_path)
    target = tmp_path / "ws"
    clock = time.perf_counter()
    with pytest.raises(WorkspaceError, match=message) as info:
        import_workspace(archive, target)
    assert time.perf_counter() - clock < 20
    assert info.value.path == str(archive) and str(info.value).startswith(f"archive {archive}")
    assert not os.path.lexists(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]  # no staging folder either


def test_import_refuses_missing_and_special_files(tmp_path):
    with pytest.raises(WorkspaceError, match="archive file not found"):
        import_workspace(tmp_path / "none.zip", tmp_path / "ws")
    os.mkfifo(tmp_path / "fifo.zip")
    with pytest.raises(WorkspaceError, match="named pipe"):
        import_workspace(tmp_path / "fifo.zip", tmp_path / "ws")
    assert not os.path.lexists(tmp_path / "ws")


def test_names_in_messages_are_printable(good, tmp_path, capsys):
    archive = write_zip(tmp_path / "a.zip", members(good) + [("snapshots/\x1b[31mred", b"")])
    with pytest.raises(WorkspaceError) as info:
        import_workspace(archive, tmp_path / "ws")
    assert info.value.file == "snapshots/\\x1b[31mred"
    odd = tmp_path / os.fsdecode(b"ws-\xff")  # a folder name that is not UTF-8
    assert main(["import", "--archive", str(good), "--workspace", str(odd)]) == 0
    assert "ws-\\xff: 2 task(s)" in capsys.readouterr().out


def test_cli_export_and_import(built, tmp_path, capsys):
    ws, archive = built[0] / "after-3", tmp_path / "ws.zip"
    assert main(["export", "--workspace", str(ws), "--out", str(archive)]) == 0
    assert f"-> {archive}" in capsys.readouterr().out
    assert main(["export", "--workspace", str(ws), "--out", str(archive)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--workspace", str(ws), "--out", str(archive), "--overwrite"]) == 0
    assert main(["import", "--archive", str(archive), "--workspace", str(tmp_path / "copy")]) == 0
    assert "3 task(s)" in capsys.readouterr().out and load_workspace(tmp_path / "copy")[0].n_tasks == 3
    assert main(["import", "--archive", str(archive), "--workspace", str(tmp_path / "copy")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["import", "--archive", str(tmp_path / "nope.zip"), "--workspace", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_export_refuses_a_corrupt_workspace_and_writes_nothing(built, tmp_path):
    ws = shutil.copytree(built[0] / "after-2", tmp_path / "ws")
    target = ws / "snapshots" / "snap-000002" / "arrays.safetensors"
    data = target.read_bytes()
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # a changed byte, whatever it was
    with pytest.raises(WorkspaceError, match="checksum mismatch"):
        export_workspace(ws, tmp_path / "ws.zip")
    assert not (tmp_path / "ws.zip").exists()
