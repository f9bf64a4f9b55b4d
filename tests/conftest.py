"""Shared fixtures: where the real test data lives, and a learner configuration fast enough for CI."""
import ipaddress
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# small enough that a 2-task demo run takes seconds on 2 CPU cores
FAST = dict(epochs=1, min_steps=0, room_steps=0, prune_samples=64, relevance_samples=64, recognizer_samples=64, n_trees=20,
            seed=0)


def _devices():
    """cpu, and cuda / mps where present (skipped with the reason elsewhere): tests that promise the
    same behaviour on every device take this as a parameter."""
    mps = getattr(torch.backends, "mps", None)
    return [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")),
        pytest.param("mps", marks=pytest.mark.skipif(not (mps and mps.is_available()), reason="no Apple MPS here")),
    ]


DEVICES = _devices()


def shared_file(*parts):
    """A real file from ../shared/data, or a skip saying it is missing (never a fabricated stand-in)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not present: {path} (see ../shared/data/SOURCES.md)")
    return path


@pytest.fixture(scope="session")
def demo_tasks():
    from rerelrp.data import build_sequence, load_dataset

    return build_sequence([load_dataset("demo")])


@contextmanager
def no_network():
    """Fail on any connection (or name lookup) that is not loopback or a unix socket."""
    attempts = []
    real = {
        "connect": socket.socket.connect,
        "connect_ex": socket.socket.connect_ex,
        "sendto": socket.socket.sendto,
        "create_connection": socket.create_connection,
        "getaddrinfo": socket.getaddrinfo,
    }

    def local(host):
        if host in (None, "", "localhost", "localhost.localdomain"):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def allowed(sock, address):
        if getattr(socket, "AF_UNIX", None) is not None and sock.family == socket.AF_UNIX:
            return True
        host = address[0] if isinstance(address, tuple) else address
        return local(host)

    def guard(name):
        def wrapper(self, *args):
            address = args[-1] if name == "sendto" else args[0]
            if not allowed(self, address):
                attempts.append(f"{name} {address!r}")
                raise OSError(f"network access is forbidden in this test: {name} to {address!r}")
            return real[name](self, *args)

        return wrapper

    def create_connection(address, *args, **kwargs):
        if not local(address[0]):
            attempts.append(f"create_connection {address!r}")
            raise OSError(f"network access is forbidden in this test: {address!r}")
        return real["create_connection"](address, *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):
        if not local(host if not isinstance(host, bytes) else host.decode()):
            attempts.append(f"getaddrinfo {host!r}")
            raise socket.gaierror(f"name lookups are forbidden in this test: {host!r}")
        return real["getaddrinfo"](host, *args, **kwargs)

    for name in ("connect", "connect_ex", "sendto"):
        setattr(socket.socket, name, guard(name))
    socket.create_connection = create_connection
    socket.getaddrinfo = getaddrinfo
    try:
        yield attempts
    finally:
        for name in ("connect", "connect_ex", "sendto"):
            setattr(socket.socket, name, real[name])
        socket.create_connection = real["create_connection"]
        socket.getaddrinfo = real["getaddrinfo"]


@pytest.fixture
def gated_steps(monkeypatch):
    """Each task of a job waits at its start until the returned event is set.

    Tests that act on a running job (busy checks, Stop) then see it running however fast the
    machine trains, and a Stop pressed before release is honoured at the task's first batch.
    """
    import threading

    from rerelrp.run.runner import SequenceRun

    release, original = threading.Event(), SequenceRun.step

    def step(self, callback=None, stop=None):
        if not release.wait(600):
            raise TimeoutError("the test never released the gated task")
        return original(self, callback, stop)

    monkeypatch.setattr(SequenceRun, "step", step)
    yield release
    release.set()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_app(extra_env, log):
    """`streamlit run app.py` on a free localhost port with ``extra_env``, its output in ``log``; yields
    ``(url, port)`` once it answers its health check, and stops it after."""
    port = _free_port()
    env = {**os.environ, **extra_env, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "localhost", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        url = f"http://localhost:{port}"
        try:
            deadline = time.time() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"streamlit did not come up:\n{Path(log).read_text()[-3000:]}")
                time.sleep(0.5)
            yield url, port
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def start_app(monkeypatch, tmp_path):
    """``start_app(demo, settings)``: the app as a fresh AppTest session with a state of its own (saving
    workspaces under tmp_path), run once; any job it left running is stopped afterwards."""
    import json
    import uuid

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.syspath_prepend(str(ROOT))  # AppTest does not put the app folder on sys.path

    def start(demo="digits", settings=None):
        monkeypatch.setenv("RERELRP_APP_KEY", f"test-{uuid.uuid4().hex}")
        monkeypatch.setenv("RERELRP_WORKSPACES", str(tmp_path / "workspaces"))
        monkeypatch.setenv("RERELRP_APP_SETTINGS", json.dumps(settings or {}))
        monkeypatch.setenv("RERELRP_APP_DEMO", demo)
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
        at.run()
        return at

    yield start
    from pages.common import get_state

    state = get_state()
    if state.busy:
        state.stop_training()
        state.job.wait(120)
    st.cache_resource.clear()
