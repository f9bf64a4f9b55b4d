"""Time rerelrp.data.load_dicom on a folder (and a zip) of 512x512 CT slices; prints files/second.

The slices are N copies of ONE real slice, ../shared/data/dicom/single/dwv_dicompyler-ct.0.dcm
(dicompyler test data via ivmartel/dwv; CT, 512x512, implicit VR little endian, 16-bit with rescale
and a stored window), split over two class folders in a temporary directory that is removed after.
Identical copies cost the same to read, hash and decode as distinct slices would.

    .venv/bin/python bench/dicom_load.py            # N=200, size 64, best of 3
    .venv/bin/python bench/dicom_load.py --n 1000 --size 128 --repeat 5
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rerelrp.data.dicom import load_dicom  # noqa: E402

SLICE = ROOT.parent / "shared" / "data" / "dicom" / "single" / "dwv_dicompyler-ct.0.dcm"


def build(folder, n):
    for k in range(n):
        cls = folder / ("class_a" if k % 2 == 0 else "class_b")
        cls.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SLICE, cls / f"slice_{k:05d}.dcm")


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of slice copies (default 200)")
    parser.add_argument("--size", type=int, default=64, help="output image side (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest is reported")
    args = parser.parse_args(argv)
    if not SLICE.is_file():
        sys.exit(f"missing {SLICE}: the benchmark needs ../shared/data/dicom (see ../shared/data/SOURCES.md)")

    print(f"input: {args.n} copies of one real 512x512 CT slice ({SLICE.name}), two class folders")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="rerelrp-bench-") as tmp:
        folder = Path(tmp) / "ct"
        build(folder, args.n)
        archive = Path(tmp) / "ct.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*.dcm")):
                zf.write(path, path.relative_to(folder).as_posix())

        load_dicom(folder, size=args.size)  # warm-up: imports, plugin discovery, file cache
        for label, source in (("folder", folder), ("zip", archive)):
            seconds, ds = best_of(args.repeat, lambda s=source: load_dicom(s, size=args.size))
            n_files = len(ds.provenance["files"])
            print(
                f"{label:6s}: {n_files} files -> {sum(len(s) for s in (ds.train, ds.val, ds.test))} images "
                f"{ds.image_shape} in {seconds:.2f} s = {n_files / seconds:.0f} files/s "
                f"(best of {args.repeat}; read + SHA-256 + decode + window + resize)"
            )


if __name__ == "__main__":
    main()
