"""Shared fixtures: where the real test data lives, and a learner configuration fast enough for CI."""
import ipaddress
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# small enough that a 2-task demo run takes seconds on 2 CPU cores
FAST = dict(epochs=1, min_steps=0, prune_samples=64, relevance_samples=64, recognizer_samples=64, n_trees=20, seed=0)


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
