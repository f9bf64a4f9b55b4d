"""Every backbone on every device present: no pooling that Apple MPS refuses, no float64, exact growth.

CUDA and MPS cases run where those devices exist and are skipped (with the reason) elsewhere;
`bench/gpu_check.sh` runs this file and the engine tests on a GPU machine.
"""
import json

import pytest
import torch
from torch import nn

from conftest import DEVICES
from rerelrp.model.nets import build_net
from rerelrp.settings import NETS


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [28, 32, 64, 128])
@pytest.mark.parametrize("arch", NETS)
def test_every_backbone_pools_only_what_mps_accepts_and_stays_float32(arch, size, device):
    net = build_net(arch, size, head_sizes=[3]).to(device).eval()
    seen, problems = [], []

    def check(module, inputs, output):
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            h, w = inputs[0].shape[-2:]
            oh, ow = output.shape[-2:]
            seen.append(type(module).__name__)
            if h % oh or w % ow:
                problems.append(f"{type(module).__name__} {h}x{w} -> {oh}x{ow}")
        for tensor in (output,) if isinstance(output, torch.Tensor) else ():
            if tensor.dtype == torch.float64:
                problems.append(f"{type(module).__name__} gives float64")

    handles = [m.register_forward_hook(check) for m in net.modules()]
    try:
        with torch.no_grad():
            logits = net(torch.rand(2, 3, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    assert not problems, problems
    assert logits.shape == (2, 3) and logits.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in net.parameters())
    if arch == "resnet18":
        assert seen == ["AdaptiveAvgPool2d"]  # torchvision's global pool: always a multiple
    else:
        assert not seen  # the VGGs pool with a fixed AvgPool2d


def test_the_small_vgg_pools_28_px_exactly_as_before():
    """AvgPool2d(2, stride 1) on the 3x3 map is bit for bit AdaptiveAvgPool2d(2): results did not move."""
    x = torch.randn(64, 64, 3, 3, requires_grad=True)
    pool = build_net("vgg", 28).body[-5]
    assert isinstance(pool, nn.AvgPool2d)
    assert torch.equal(pool(x), nn.AdaptiveAvgPool2d(2)(x))
    grad_fixed = torch.autograd.grad(pool(x).sum(), x)[0]
    assert torch.equal(grad_fixed, torch.autograd.grad(nn.AdaptiveAvgPool2d(2)(x).sum(), x)[0])


def test_too_small_inputs_are_refused_with_the_size_needed():
    from rerelrp.errors import ConfigError

    with pytest.raises(ConfigError, match="vgg needs inputs of at least 16 px, not 12"):
        build_net("vgg", 12)


def test_vgg11_learns_two_tasks_without_forgetting(tmp_path):
    """The paper's backbone from the command line, small enough for CI (16 px, few samples); the
    README's command (`--data demo --tasks 2 --net vgg11 --epochs 1`, defaults) was run by hand."""
    from rerelrp.cli import main

    out = tmp_path / "run"
    assert main(["run", "--data", "demo", "--tasks", "2", "--net", "vgg11", "--input-size", "16", "--epochs", "1",
                 "--min-steps", "0", "--batch-size", "32", "--prune-samples", "64", "--relevance-samples", "32",
                 "--recognizer-samples", "64", "--trees", "10", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"]["forgetting_taw"] == 0.0
    assert {row["layer"] for row in metrics["capacity"][-1]} >= {"conv8", "fc1", "fc2"}
    assert metrics["acc_taw"][0][0] == metrics["acc_taw"][1][0]  # task 0's sub-network unchanged by task 1


def test_relevance_passes_take_fewer_rows_for_larger_inputs():
    from rerelrp.model.batching import rows_per_pass

    assert rows_per_pass(28) == rows_per_pass(16) == 512  # unchanged where every measured figure comes from
    assert rows_per_pass(64) == 98 and rows_per_pass(128) == 24 and rows_per_pass(224) == 16
    assert all(rows_per_pass(s) * s * s <= 512 * 28 * 28 for s in (64, 128))  # activations stay near 28-px size


def test_lazy_inputs_give_the_same_bits_as_converting_everything_at_once():
    import numpy as np

    from rerelrp.method.scope import input_statistics
    from rerelrp.model.inputs import LazyInputs, to_input

    images = np.random.default_rng(0).integers(0, 256, (37, 28, 28, 1), dtype=np.uint8)
    for size in (28, 64, 128):  # at 128 px statistics are read 24 images at a time
        whole, lazy = to_input(images, size), LazyInputs(images, size)
        assert len(lazy) == 37 and torch.equal(lazy[5:20], whole[5:20])
        index = torch.tensor([30, 2, 2, 11])
        assert torch.equal(lazy[index], whole[index])
        assert torch.equal(torch.cat(list(lazy.batches(8))), whole)
        assert np.array_equal(input_statistics(lazy), input_statistics(whole))
        both = LazyInputs.cat([LazyInputs(images[:10], size), LazyInputs(images[10:], size)])
        assert torch.equal(both[0:37], whole)
