"""Workspaces: round trip, continuing, atomic saves under kills, corrupt/tampered/malicious files, the CLI."""
import copy
import hashlib
import json
import os
import pickle
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rerelrp.data import build_sequence, load_dataset
from rerelrp.errors import WorkspaceError
from rerelrp.method.learner import ReReLRP
from rerelrp.model.nets import LENET_SIZES
from rerelrp.run.runner import SequenceRun
from rerelrp.store.workspace import (
    FORMAT_VERSION,
    check_sequence,
    list_workspaces,
    load_workspace,
    resolve_workspace,
    save_workspace,
)

# min_free 0.5 with no fine-tune making room: layers grow between tasks, so saved layer sizes differ from the defaults
CONFIG = dict(net="lenet", input_size=16, epochs=1, relevance_samples=24, recognizer_samples=24, n_trees=8,
              min_free=0.5, room_steps=0, device="cpu")


@pytest.fixture(scope="module")
def tasks():
    return build_sequence([load_dataset("demo")], 3)


@pytest.fixture(scope="module")
def trained(tasks):
    """A learner after 2 of 3 tasks, its metrics, and a copy of it after the 3rd task."""
    learner = ReReLRP(**CONFIG)
    run = SequenceRun(learner, tasks)
    run.step()
    run.step()
    three = SequenceRun(copy.deepcopy(learner), tasks, copy.deepcopy(run.metrics))
    three.step()
    return learner, run.metrics, three.learner, three.metrics


@pytest.fixture(scope="module")
def saved(trained, tasks, tmp_path_factory):
    """Pristine 2-task and 3-task workspaces; tests copy them before changing anything."""
    learner, metrics, learner3, metrics3 = trained
    root = tmp_path_factory.mktemp("ws")
    save_workspace(root / "two", learner, metrics, tasks=tasks, extra={"data": {"sources": ["demo"], "tasks": 3}})
    save_workspace(root / "three", learner3, metrics3, tasks=tasks, extra={"data": {"sources": ["demo"], "tasks": 3}})
    return root


@pytest.fixture()
def ws(saved, tmp_path):
    shutil.copytree(saved / "two", tmp_path / "ws")
    return tmp_path / "ws"


def probe(tasks):
    return np.concatenate([t.test.images[:20] for t in tasks])


def assert_same_predictions(a, b, images):
    pa, pb = a.predict(images), b.predict(images)
    assert np.array_equal(pa.p_task, pb.p_task)
    assert np.array_equal(pa.global_class, pb.global_class)
    assert np.array_equal(pa.subnet_class, pb.subnet_class)


def snapshot_dir(path):
    return path / "snapshots" / json.loads((path / "CURRENT").read_text())["snapshot"]


def rehash(path):
    """What a forger does after changing a file: recompute every checksum so they match again."""
    snap = snapshot_dir(path)
    manifest = json.loads((snap / "manifest.json").read_text())
    files = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest["files"] = {rel: {"sha256": hashlib.sha256((snap / rel).read_bytes()).hexdigest(),
                               "bytes": (snap / rel).stat().st_size} for rel in files}
    data = json.dumps(manifest).encode()
    (snap / "manifest.json").write_bytes(data)
    pointer = json.loads((path / "CURRENT").read_text())
    pointer["manifest_sha256"] = hashlib.sha256(data).hexdigest()
    (path / "CURRENT").write_text(json.dumps(pointer))


# --------------------------------------------------------------------------- round trip
def test_round_trip_predicts_bit_identically(trained, tasks, saved):
    learner, metrics, _, _ = trained
    loaded, loaded_metrics, meta = load_workspace(saved / "two")
    assert loaded.ledger_.layer_sizes != LENET_SIZES  # growth happened and was restored
    assert loaded.ledger_.layer_sizes == learner.ledger_.layer_sizes
    assert loaded.tasks_ == json.loads(json.dumps(learner.tasks_))
    assert loaded_metrics.to_dict() == json.loads(json.dumps(metrics.to_dict()))
    assert meta["format_version"] == FORMAT_VERSION and meta["extra"]["data"]["sources"] == ["demo"]
    for a, b in zip(learner.net_.state_dict().values(), loaded.net_.state_dict().values()):
        assert torch.equal(a, b)
    images = probe(tasks)
    assert_same_predictions(learner, loaded, images)
    ea, eb = learner.explain(images[:6]), loaded.explain(images[:6])
    assert np.array_equal(ea.heatmaps, eb.heatmaps) and ea.top_units == eb.top_units


def test_continuing_after_load_matches_an_unsaved_learner_bit_for_bit(trained, tasks, saved):
    _, _, learner3, _ = trained  # the in-memory learner that went on to the 3rd task without a save
    loaded, metrics, _ = load_workspace(saved / "two")
    SequenceRun(loaded, tasks, metrics).step()  # as the 3rd task was learned: in a run, which calibrates P_T
    assert loaded.p_task_temperature_ == learner3.p_task_temperature_ != 1.0
    for (name, a), b in zip(learner3.net_.state_dict().items(), loaded.net_.state_dict().values()):
        assert torch.equal(a, b), name
    kept, again = learner3.store_.to_arrays(), loaded.store_.to_arrays()
    assert list(kept) == list(again) and all(np.array_equal(kept[k], again[k]) for k in kept)
    assert_same_predictions(learner3, loaded, probe(tasks))


def test_saving_again_rolls_snapshots_and_keeps_two(trained, tasks, ws):
    _, _, learner3, metrics3 = trained
    save_workspace(ws, learner3, metrics3, tasks=tasks)
    save_workspace(ws, learner3, metrics3, tasks=tasks)
    assert sorted(p.name for p in (ws / "snapshots").iterdir()) == ["snap-000002", "snap-000003"]
    loaded, metrics, _ = load_workspace(ws)
    assert loaded.n_tasks == 3 and len(metrics.acc_tag) == 3


def test_list_workspaces_shows_good_and_broken(saved, tmp_path):
    shutil.copytree(saved / "two", tmp_path / "a")
    shutil.copytree(saved / "three", tmp_path / "b")
    (tmp_path / "b" / "CURRENT").write_text("{not json")
    (tmp_path / "not-a-workspace").mkdir()
    infos = {info["name"]: info for info in list_workspaces(tmp_path)}
    assert set(infos) == {"a", "b"}
    assert infos["a"]["n_tasks"] == 2 and infos["a"]["format_version"] == FORMAT_VERSION and infos["a"]["problem"] is None
    assert infos["a"]["task_names"] == ["digits t0", "digits t1"] and infos["a"]["modified"]
    assert "not valid JSON" in infos["b"]["problem"]
    assert list_workspaces(tmp_path / "missing") == []


def test_resolve_workspace_names_and_paths(tmp_path):
    assert resolve_workspace("brain") == Path("./workspaces/brain")
    assert resolve_workspace("brain", root=tmp_path) == tmp_path / "brain"
    assert resolve_workspace("./brain") == Path("./brain")
    assert resolve_workspace(str(tmp_path / "x")) == tmp_path / "x"


def test_save_refuses_untrained_learner_and_foreign_folder(trained, tmp_path):
    with pytest.raises(WorkspaceError, match="not learned a task"):
        save_workspace(tmp_path / "w", ReReLRP(**CONFIG))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("x")
    with pytest.raises(WorkspaceError, match="not a workspace"):
        save_workspace(tmp_path / "docs", trained[0], trained[1])
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "x"


def test_check_sequence_refuses_other_data(saved, tasks):
    learner, _, meta = load_workspace(saved / "two")
    check_sequence(saved / "two", learner, meta, tasks)  # same data: fine
    other = build_sequence([load_dataset("demo")], 5)
    with pytest.raises(WorkspaceError, match="task 0 differs"):
        check_sequence(saved / "two", learner, meta, other)
    with pytest.raises(WorkspaceError, match="only 1"):
        check_sequence(saved / "two", learner, meta, tasks[:1])
    reseeded = build_sequence([load_dataset("demo", seed=1)], 3)  # same names and sizes, other images
    with pytest.raises(WorkspaceError, match="fingerprint"):
        check_sequence(saved / "two", learner, meta, reseeded)


# --------------------------------------------------------------------------- killed saves
# The saving process is a fork of this one (no second torch import), killed exactly at a point of
# the save sequence with os._exit, or at a random moment with SIGKILL.
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def forked(work):
    """Run ``work`` in a child process that never returns into pytest; its exit status is returned by wait."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work()
        except BaseException:  # noqa: BLE001 - the child must end here whatever happens
            code = 1
        finally:
            os._exit(code)
    return pid


def exit_status(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@needs_fork
@pytest.mark.parametrize("stage,tasks_after", [("file", 2), ("snapshot-written", 2), ("snapshot-renamed", 2),
                                               ("current-tmp", 2), ("current-switched", 3)])
def test_save_killed_at_any_point_leaves_a_loadable_workspace(trained, tasks, ws, stage, tasks_after):
    from rerelrp import fileio
    from rerelrp.store.workspace import saving

    _, _, learner3, metrics3 = trained

    def killed_save():
        if stage == "current-tmp":  # inside the atomic replace of CURRENT, before its rename
            real = os.replace
            fileio.os.replace = lambda a, b: os._exit(9) if str(b).endswith("CURRENT") else real(a, b)
        else:
            seen = []

            def checkpoint(name):
                seen.append(name)
                if name == stage and (name != "file" or len(seen) == 3):
                    os._exit(9)

            saving.checkpoint = checkpoint
        save_workspace(ws, learner3, metrics3, tasks=tasks)

    assert exit_status(forked(killed_save)) == 9
    loaded, metrics, _ = load_workspace(ws)
    assert loaded.n_tasks == tasks_after and len(metrics.acc_tag) == tasks_after
    reference = trained[0] if tasks_after == 2 else learner3
    assert_same_predictions(reference, loaded, probe(tasks))
    # the next save cleans up what the killed one left behind
    save_workspace(ws, learner3, metrics3, tasks=tasks)
    assert not list((ws / "snapshots").glob(".tmp-*"))
    assert load_workspace(ws)[0].n_tasks == 3


@needs_fork
def test_sigkill_during_repeated_saves_never_breaks_the_workspace(trained, ws):
    states = [trained[:2], trained[2:]]

    def save_forever():
        i = 0
        while True:
            save_workspace(ws, *states[i % 2])
            i += 1

    for delay in (0.2, 0.45, 0.7):
        pid = forked(save_forever)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        assert exit_status(pid) == -signal.SIGKILL
        learner, metrics, _ = load_workspace(ws)
        assert learner.n_tasks in (2, 3) and len(metrics.acc_tag) == learner.n_tasks


# --------------------------------------------------------------------------- corrupt and tampered
def test_not_a_workspace(tmp_path):
    with pytest.raises(WorkspaceError, match="no such folder"):
        load_workspace(tmp_path / "missing")
    with pytest.raises(WorkspaceError, match="no CURRENT file"):
        load_workspace(tmp_path)


def test_flipped_byte_is_a_checksum_error_naming_the_file(ws):
    target = snapshot_dir(ws) / "network.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WorkspaceError, match="checksum mismatch") as info:
        load_workspace(ws)
    assert info.value.file.endswith("network.safetensors") and str(ws) in str(info.value)


@pytest.mark.parametrize("change,message", [
    (lambda snap: (snap / "arrays.safetensors").unlink(), "file missing"),
    (lambda snap: (snap / "notes.txt").write_text("hello"), "does not list: notes.txt"),
    (lambda snap: (snap / "manifest.json").write_text((snap / "manifest.json").read_text().replace("digits", "DIGITS")),
     "manifest was changed"),
])
def test_missing_extra_or_edited_files(ws, change, message):
    change(snapshot_dir(ws))
    with pytest.raises(WorkspaceError, match=message):
        load_workspace(ws)


def test_pointer_to_missing_snapshot_and_path_tricks(ws):
    pointer = json.loads((ws / "CURRENT").read_text())
    for name, message in (("snap-000009", "missing"), ("../../etc", "not a snapshot name")):
        (ws / "CURRENT").write_text(json.dumps(pointer | {"snapshot": name}))
        with pytest.raises(WorkspaceError, match=message):
            load_workspace(ws)


@pytest.mark.parametrize("version,message",
                         [(FORMAT_VERSION + 1, "newer rerelrp"), (1, "old workspace format 1 \\(rerelrp 0.1\\)")])
def test_other_format_versions(ws, version, message):
    snap = snapshot_dir(ws)
    manifest = json.loads((snap / "manifest.json").read_text())
    (snap / "manifest.json").write_text(json.dumps(manifest | {"format_version": version}))
    rehash(ws)
    with pytest.raises(WorkspaceError, match=message):
        load_workspace(ws)
    pointer = json.loads((ws / "CURRENT").read_text())
    (ws / "CURRENT").write_text(json.dumps(pointer | {"format_version": version}))
    with pytest.raises(WorkspaceError, match=message):
        load_workspace(ws)


def test_tampered_content_with_matching_checksums_is_still_refused(ws):
    snap = snapshot_dir(ws)
    record = json.loads((snap / "learner.json").read_text())
    record["meta"]["layer_sizes"][0][1] += 3  # a network that does not fit its weights
    (snap / "learner.json").write_text(json.dumps(record))
    rehash(ws)
    with pytest.raises(WorkspaceError, match="network.safetensors"):
        load_workspace(ws)


def test_manifest_cannot_point_outside_the_snapshot(ws):
    snap = snapshot_dir(ws)
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["files"]["../../outside.json"] = {"sha256": "0" * 64, "bytes": 1}
    (snap / "manifest.json").write_text(json.dumps(manifest))
    pointer = json.loads((ws / "CURRENT").read_text())
    pointer["manifest_sha256"] = hashlib.sha256((snap / "manifest.json").read_bytes()).hexdigest()
    (ws / "CURRENT").write_text(json.dumps(pointer))
    with pytest.raises(WorkspaceError, match="unexpected file"):
        load_workspace(ws)


# --------------------------------------------------------------------------- workspaces crafted to run code
class Payload:
    """An object whose restoring writes a file: what a hostile model file would do instead."""

    marker = None

    def __setstate__(self, state):
        Path(state["marker"]).write_text("payload ran")


class _Reduce:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({self.marker!r}).write_text('payload ran')",)


def _plant_recogniser(ws, data):
    """A forged recogniser file (a Gaussian workspace has no estimators folder: the forger adds one)."""
    (snapshot_dir(ws) / "estimators").mkdir(exist_ok=True)
    (snapshot_dir(ws) / "estimators" / "recognizer-000.skops").write_bytes(data)
    rehash(ws)  # a forger also fixes every checksum


def test_pickle_payload_does_not_run(ws, tmp_path):
    marker = tmp_path / "pwned-pickle"
    payload = pickle.dumps(_Reduce(str(marker)))
    _plant_recogniser(ws, payload)
    with pytest.raises(WorkspaceError, match="not a skops file"):
        load_workspace(ws)
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: plain pickle would have run it
    assert marker.exists()


def test_skops_payload_with_untrusted_type_does_not_run(ws, tmp_path):
    import skops.io

    marker = tmp_path / "pwned-skops"
    payload = Payload()
    payload.__dict__["marker"] = str(marker)
    data = skops.io.dumps(payload)
    _plant_recogniser(ws, data)
    with pytest.raises(WorkspaceError, match="Payload") as info:
        load_workspace(ws)
    assert "refused without loading" in str(info.value)
    assert not marker.exists()
    type_name = skops.io.get_untrusted_types(data=data)[0]
    skops.io.loads(data, trusted=[type_name])  # trusting the type would have run it
    assert marker.exists()


def test_forest_with_out_of_range_nodes_is_refused_before_any_predict(ws):
    import skops.io
    from sklearn.tree._tree import Tree

    from rerelrp.method.recognition import fit_recognizer

    rng = np.random.default_rng(0)
    forest = fit_recognizer(rng.normal(size=(40, 5)), np.r_[np.zeros(20, int), np.ones(20, int)], n_trees=2)
    tree = forest.estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["left_child"][0] = 10**9  # predict would read far outside the node array
    bad = Tree(tree.n_features, np.asarray(tree.n_classes), tree.n_outputs)
    bad.__setstate__(state | {"nodes": nodes})
    forest.estimators_[0].tree_ = bad
    _plant_recogniser(ws, skops.io.dumps(forest))
    with pytest.raises(WorkspaceError, match="child indices"):
        load_workspace(ws)


# --------------------------------------------------------------------------- command line
def test_cli_run_continues_a_workspace_and_checks_the_sequence(saved, tmp_path, capsys):
    from rerelrp.cli import main

    ws = tmp_path / "cli-ws"
    shutil.copytree(saved / "two", ws)
    out = tmp_path / "out"
    # --epochs and --seed conflict with the workspace: reported, and the workspace's settings win
    code = main(["run", "--data", "demo", "--tasks", "3", "--workspace", str(ws), "--out", str(out),
                 "--epochs", "7", "--quiet", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "epochs" in captured.err and "workspace" in captured.err
    learner, metrics, _ = load_workspace(ws)
    assert learner.n_tasks == 3 and learner.epochs == 1 and len(metrics.acc_tag) == 3
    assert len(json.loads((out / "metrics.json").read_text())["acc_tag"]) == 3
    # nothing left to learn: a clear message, no change
    assert main(["run", "--data", "demo", "--tasks", "3", "--workspace", str(ws), "--out", str(out), "--quiet"]) == 0
    assert "already learned" in capsys.readouterr().out
    # a sequence that does not start with the workspace's tasks
    assert main(["run", "--data", "demo", "--tasks", "5", "--workspace", str(ws), "--out", str(out), "--quiet"]) == 2
    assert "task 0 differs" in capsys.readouterr().err


def test_cli_refuses_workspace_for_reference_methods(tmp_path, capsys):
    from rerelrp.cli import main

    code = main(["run", "--data", "demo", "--method", "finetune", "--workspace", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and "--workspace" in capsys.readouterr().err
