"""Time one training step of a backbone, in PyTorch's default (NCHW) or channels-last memory format.

A measurement for choosing how to spend the wall-time budget (docs/method-notes.md, *Where
BloodMNIST's task-aware accuracy is lost*). A fresh network is not what later tasks train: their
layers have grown (``--layer-sizes``, from a run's ``metrics.json`` capacity) and part of every
BatchNorm is frozen (``--frozen-share``), which takes the slower path of ``FrozenAwareBatchNorm``.

    OMP_NUM_THREADS=2 .venv/bin/python bench/step_time.py --channels-last --frozen-share 0.5 \
        --layer-sizes conv1=25,conv2=27,conv3=50,conv4=63,conv5=95,conv6=99
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from run_benchmarks import cpu_name  # bench/ is on sys.path when this script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rerelrp.model.nets import build_net


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="vgg")
    parser.add_argument("--input-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--layer-sizes", default=None,
                        help="units per layer after growth, e.g. conv1=25,conv2=27 (from a run's metrics.json capacity)")
    parser.add_argument("--frozen-share", type=float, default=0.0,
                        help="share of every BatchNorm's channels frozen by earlier tasks (0: a first task)")
    args = parser.parse_args()
    torch.manual_seed(0)
    sizes = None
    if args.layer_sizes:
        sizes = dict(build_net(args.net, args.input_size).layer_sizes)
        sizes.update({k: int(v) for k, v in (item.split("=") for item in args.layer_sizes.split(","))})
    net = build_net(args.net, args.input_size, layer_sizes=sizes)
    net.add_head(2)
    for layer in net.unit_layers:
        if layer.norm is not None and args.frozen_share > 0:
            layer.norm.set_frozen(torch.arange(layer.n_units) < round(args.frozen_share * layer.n_units))
    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size)
    y = torch.randint(0, 2, (args.batch_size,))
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()

    def step():
        loss = F.cross_entropy(net(x)[:, :2], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(10):  # warm-up: oneDNN picks its kernels on the first calls
        step()
    clock = time.perf_counter()
    for _ in range(args.steps):
        step()
    ms = 1000.0 * (time.perf_counter() - clock) / args.steps
    layout = "channels-last" if args.channels_last else "NCHW"
    print(f"{args.net} {args.input_size} px, layers {args.layer_sizes or 'as built'}, {args.frozen_share:.0%} of "
          f"BatchNorm channels frozen, batch {args.batch_size}, {layout}: {ms:.1f} ms per step "
          f"({cpu_name()}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
