"""One device rule for the whole package: ``auto`` = CUDA, else Apple MPS, else CPU.

What a seed promises on each device, and what is set to keep that promise, is written in
docs/devices.md.
"""
import os
from contextlib import contextmanager

import torch

from rerelrp.errors import ConfigError
from rerelrp.settings import DEVICES


def resolve_device(name="auto"):
    if name not in DEVICES and not str(name).startswith("cuda:"):
        raise ConfigError(f"unknown device '{name}'; choose one of {', '.join(DEVICES)}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use --device auto or cpu")
    if name == "mps" and not has_mps:
        raise ConfigError("device 'mps' was asked for but Apple MPS is not available; use --device auto or cpu")
    device = torch.device(name)
    if device.type == "cuda":
        make_cuda_reproducible()
    return device


def available_devices():
    """The device settings that can work here: auto and cpu, then cuda and mps where present."""
    mps = getattr(torch.backends, "mps", None)
    return ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if mps and mps.is_available() else [])


def make_cuda_reproducible():
    """Deterministic cuDNN and cuBLAS, no TF32: the same seed gives the same run, and frozen units
    stay exact. cuDNN's autotuner could pick another algorithm after a layer grows; TF32 would round
    every product to 10 mantissa bits. Operations without a deterministic CUDA kernel warn, never fail."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def describe_device(device):
    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


@contextmanager
def flush_denormals():
    """Treat denormal floats as zero on the CPU for the duration of the block.

    Near the end of training, losses near 0 leave gradients and momentum in the denormal range,
    where x86 CPUs run many times slower (measured: 1.45 s instead of 0.06 s per optimiser step on
    the digits demo). Values below 1e-38 do not change any result that matters here.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


_BLAS = None  # threadpoolctl's view of the loaded BLAS libraries, made once (finding them costs milliseconds)


@contextmanager
def blas_threads(n):
    """Hold numpy's BLAS to ``n`` threads for the block (torch's setting does not reach it).

    OpenBLAS otherwise starts a thread per core for every small matrix product and keeps them
    spinning, which on a 2-core machine slowed a one-image prediction by torch's own thread twofold.
    """
    global _BLAS
    from threadpoolctl import ThreadpoolController

    _BLAS = _BLAS or ThreadpoolController()
    with _BLAS.limit(limits=n, user_api="blas"):
        yield
