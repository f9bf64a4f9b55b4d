"""The software a run, a workspace or a report was made with (written into each of them)."""
from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("rerelrp", "torch", "torchvision", "zennit", "scikit-learn", "numpy", "medmnist", "pydicom", "streamlit")


def package_versions():
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
