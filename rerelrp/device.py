"""One device rule for the whole package: ``auto`` = CUDA, else Apple MPS, else CPU."""
import torch

from rerelrp.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


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
    return torch.device(name)


def describe_device(device):
    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"
