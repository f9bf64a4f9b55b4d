"""`rerelrp compare --jobs N --threads T` and `--cluster tcp://HOST:PORT`: the runs in worker processes
or on a real Dask scheduler (two worker processes on 127.0.0.1) give the figures of one process at
the same thread count; per-task progress comes back, Stop ends the runs, errors are clear."""
import json
import threading

import pytest
from test_compare import FAST_ARGS

from conftest import FAST, no_network
from rerelrp.cli import main
from rerelrp.errors import ConfigError, StopRequested
from rerelrp.run import compare
from rerelrp.run.method_run import TaskRecipe
from rerelrp.run.parallel import check

# 2 methods x 2 seeds (rerelrp also gives its max-softmax ablation): 4 runs, 6 records. LeNet and 40 steps a
# task: the runs learn something (TAg about 40-50 %, recognition about 90 %) in a second or two each, so that
# the three comparisons fit in about a minute on 2 loaded cores (the default VGG gives the same agreement)
COMPARE = ["compare", "--data", "demo", "--tasks", "2", "--methods", "rerelrp,rerelrp-maxsoftmax,replay",
           "--seeds", "0,1", "--exemplars-per-class", "5", "--threads", "1", *FAST_ARGS, "--net", "lenet",
           "--min-steps", "40"]
PARAMS = {k: v for k, v in FAST.items() if k != "seed"} | {"net": "lenet"}


def figures(out):
    """compare.json without the wall times: every figure of every run, and what they were run with."""
    result = json.loads((out / "compare.json").read_text())
    result["runs"] = [{k: v for k, v in run.items() if k != "seconds"} for run in result["runs"]]
    return result


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs1")
    assert main([*COMPARE, "--jobs", "1", "--out", str(out)]) == 0
    result = figures(out)
    assert [(r["method"], r["seed"]) for r in result["runs"]] == [
        (m, s) for m in ("rerelrp", "rerelrp-maxsoftmax", "replay") for s in (0, 1)]
    return result


@pytest.fixture(scope="module")
def dask_scheduler():
    """A real Dask scheduler and two single-threaded worker processes, all on 127.0.0.1, no dashboard."""
    distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed: "
                                                            "pip install 'rerelrp[cluster]' to test --cluster")
    cluster = distributed.LocalCluster(host="127.0.0.1", processes=True, n_workers=2, threads_per_worker=1,
                                       dashboard_address=None)
    try:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        yield cluster.scheduler_address
    finally:
        cluster.close()


def test_two_worker_processes_give_the_figures_of_one_process(one_process, tmp_path):
    with no_network() as attempts:
        rc = main([*COMPARE, "--jobs", "2", "--out", str(tmp_path)])
    assert rc == 0 and attempts == []
    assert figures(tmp_path) == one_process


def test_a_dask_scheduler_with_two_workers_gives_the_figures_of_one_process(one_process, dask_scheduler, tmp_path):
    with no_network() as attempts:
        rc = main([*COMPARE, "--cluster", dask_scheduler, "--out", str(tmp_path)])
    assert rc == 0 and attempts == []
    assert figures(tmp_path) == one_process


@pytest.mark.parametrize("where", ["processes", "dask"])
def test_progress_comes_back_per_task_and_stop_ends_the_runs(where, request):
    """Stop pressed at the first progress event from a worker: the other runs are cancelled or stop at
    their next batch, the comparison raises StopRequested (and returns only once they have ended)."""
    where_args = {"jobs": 2} if where == "processes" else {"cluster": request.getfixturevalue("dask_scheduler")}
    stop, seen, finished = threading.Event(), [], []

    def on_task(method, seed, learned):
        seen.append((method, seed, learned))
        stop.set()

    with pytest.raises(StopRequested, match="stopped on request"):
        compare.compare(TaskRecipe.of(["demo"], 2), ["replay", "ewc"], [0, 1], PARAMS, 5, stop=stop,
                        on_run=finished.append, on_task=on_task, threads=1, **where_args)
    assert seen and seen[0][2] == 0 and seen[0][:2] in {(m, s) for m in ("replay", "ewc") for s in (0, 1)}


def test_a_task_recipe_loads_what_the_command_line_loads_and_travels_without_images(tmp_path, monkeypatch):
    import pickle

    from rerelrp.data import build_sequence, load_dataset

    recipe = TaskRecipe.of(["demo"], 2, data_root="data")
    assert len(pickle.dumps(recipe)) < 1000 and recipe.data_root.startswith("/")
    ours, theirs = recipe(1), build_sequence([load_dataset("demo", seed=1)], 2)
    assert [t.name for t in ours] == [t.name for t in theirs]
    assert all((a.train.images == b.train.images).all() and (a.test.labels == b.test.labels).all()
               for a, b in zip(ours, theirs))
    monkeypatch.chdir(tmp_path)  # a file that exists here is sent as its absolute path, names as they are
    (tmp_path / "local.npz").write_bytes(b"")
    assert TaskRecipe.of(["local.npz", "bloodmnist", "demo"]).sources == (str(tmp_path.resolve() / "local.npz"),
                                                                         "bloodmnist", "demo")


def test_bad_fan_out_options_are_refused(capsys):
    with pytest.raises(ConfigError, match="--jobs"):
        check(0)
    with pytest.raises(ConfigError, match="--threads"):
        check(2, 0)
    with pytest.raises(ConfigError, match="either --jobs"):
        check(2, 1, "tcp://127.0.0.1:8786")
    assert main(["compare", "--data", "demo", "--out", "/nonexistent/never-written", "--cluster", "tcp://127.0.0.1:1",
                 "--download"]) == 2
    assert "--download with --cluster" in capsys.readouterr().err


def test_without_dask_the_cluster_option_names_the_extra(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main([*COMPARE, "--cluster", "tcp://127.0.0.1:8786", "--out", str(tmp_path)]) == 2
    assert "needs Dask distributed, which is not installed: pip install 'rerelrp[cluster]'" in capsys.readouterr().err


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch, tmp_path, capsys):
    pytest.importorskip("distributed", reason="Dask distributed is not installed")
    import socket

    from rerelrp.run import parallel

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", "1s")
    with no_network() as attempts:
        rc = main([*COMPARE, "--cluster", f"tcp://127.0.0.1:{port}", "--out", str(tmp_path)])
    assert rc == 2 and attempts == []
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in capsys.readouterr().err
