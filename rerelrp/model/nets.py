"""Backbones whose prunable units (conv channels, linear features) are enumerable by layer name.

Every unit layer ends in a :class:`UnitMask`, the single place where a sub-network switches
units off. BatchNorm sits before the mask, so a switched-off unit outputs exactly zero, and
zennit's canonizers still find each (conv, BatchNorm) pair next to each other and merge them.
Heads are not units: each task gets its own linear layer on the shared feature vector.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from rerelrp.errors import ConfigError
from rerelrp.model.growth import GrowingLinear
from rerelrp.settings import NETS

IN_CHANNELS = 3  # gray images are repeated to three channels so gray and RGB tasks share one network


class UnitMask(nn.Module):
    """Multiplies each unit's output by a per-sample 0/1 mask; passes through when no mask is set.

    Masks are per sample so that one batch can hold several sub-networks at once (one forward
    and one backward pass for all of them). zennit assigns no rule to this module, so relevance
    flows through it by the plain gradient: switched-off units receive none.
    """

    def __init__(self):
        super().__init__()
        self.mask = None  # (N, units) float tensor while a sub-network is selected

    def forward(self, x):
        if self.mask is None:
            return x
        return x * self.mask.view(self.mask.shape + (1,) * (x.dim() - 2))


class FrozenAwareBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose frozen channels keep their stored statistics, also in training mode.

    A later task trains with batch statistics for its free channels, while channels kept by an
    earlier task normalise with their running statistics, exactly as they do at inference.
    Frozen features therefore look the same to the new task in training and at test time.
    """

    def __init__(self, num_features, **kwargs):
        super().__init__(num_features, **kwargs)
        self.register_buffer("frozen", torch.zeros(num_features, dtype=torch.bool), persistent=False)
        self.any_frozen = False  # kept on the host: reading ``frozen.any()`` per batch syncs a GPU every layer

    def set_frozen(self, frozen):
        """Mark the channels that keep their statistics (once per task, by the Freezer)."""
        frozen = torch.as_tensor(frozen, dtype=torch.bool)
        self.frozen.copy_(frozen)
        self.any_frozen = bool(frozen.any())

    def forward(self, x):
        if not (self.training and self.any_frozen):
            return super().forward(x)
        # copies: the batch-statistics pass below updates the running statistics in place, and the
        # backward pass of this one reads the tensors it was given (the originals made frozen units
        # pass back gradients scaled by statistics they never normalise with)
        as_eval = F.batch_norm(x, self.running_mean.clone(), self.running_var.clone(), self.weight, self.bias, False,
                               0.0, self.eps)
        as_train = super().forward(x)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.where(self.frozen.view(shape), as_eval, as_train)


@dataclass
class UnitLayer:
    """One layer of units: the module computing them, its BatchNorm (if any) and its mask.

    ``consumer`` is the module reading these units (None: the heads) and ``inputs_per_unit`` how
    many of its input columns one unit feeds (the spatial size where a flatten sits between);
    both are known only for sequential bodies, where a layer can grow.
    """

    name: str
    module: nn.Module  # Conv2d or Linear; its output rows are the units
    norm: nn.Module | None
    mask: UnitMask
    consumer: nn.Module | None = None
    inputs_per_unit: int = 1
    growable: bool = False

    @property
    def n_units(self):
        """The layer's size, read from its weights: the one place a layer's size is kept."""
        return self.module.weight.shape[0]

    @property
    def is_conv(self):
        return isinstance(self.module, nn.Conv2d)


class UnitNet(nn.Module):
    """A shared body of unit layers plus one head per task (``heads`` is registered last).

    ``forward`` returns the logits of every head side by side, in global class order. The last
    unit layer feeds the heads, so its size is the feature dimension.
    """

    def __init__(self, body, unit_layers, arch, input_size):
        super().__init__()
        self.body = body
        self.heads = nn.ModuleList()
        self.unit_layers = unit_layers
        self.arch = arch
        self.input_size = input_size

    @property
    def feature_dim(self):
        return self.unit_layers[-1].n_units

    def add_head(self, n_classes):
        head = GrowingLinear(self.feature_dim, n_classes)
        device = next(self.body.parameters()).device
        self.heads.append(head.to(device))
        return head

    def features(self, x):
        return self.body(x)

    def input_blocks(self):
        """Block ends of every linear layer whose inputs grew, by module name (saved with the network)."""
        return {name: list(m.blocks) for name, m in self.named_modules()
                if isinstance(m, GrowingLinear) and len(m.blocks) > 1}

    def set_input_blocks(self, blocks):
        """Restore :meth:`input_blocks`; raises ValueError if a block list does not fit its layer."""
        modules = dict(self.named_modules())
        for name, ends in blocks.items():
            m = modules.get(name)
            if not isinstance(m, GrowingLinear) or not isinstance(ends, list) or not all(
                    isinstance(e, int) for e in ends) or ends != sorted(set(ends)) or ends[0] < 1 or ends[-1] != m.in_features:
                raise ValueError(f"input blocks {ends!r} do not fit layer {name!r}")
            m.blocks = list(ends)

    def forward(self, x):
        f = self.body(x)
        return torch.cat([h(f) for h in self.heads], dim=1)

    @contextmanager
    def subnetworks(self, masks):
        """Select a sub-network per sample for the block: ``masks`` maps layer name to (N, units), None is
        all units on. On exit, also on an error, every mask is as it was (zennit's habit: undo what you did)."""
        before = [layer.mask.mask for layer in self.unit_layers]
        try:
            for layer in self.unit_layers:
                layer.mask.mask = None if masks is None else masks[layer.name]
            yield self
        finally:
            for layer, mask in zip(self.unit_layers, before):
                layer.mask.mask = mask

    @contextmanager
    def unit_outputs(self, reduce=None):
        """Every unit layer's (masked) output of the latest forward pass in the block, by layer name, as
        ``reduce(output)`` if given (to keep less than whole maps); the hooks are removed on exit."""
        stored = {}
        with ExitStack() as hooks:
            for layer in self.unit_layers:
                hooks.enter_context(layer.mask.register_forward_hook(partial(_keep_output, stored, layer.name, reduce)))
            yield stored

    @property
    def layer_sizes(self):
        return {layer.name: layer.n_units for layer in self.unit_layers}


def _keep_output(stored, name, reduce, module, inputs, output):
    stored[name] = output if reduce is None else reduce(output)


VGG_SIZES = {"conv1": 16, "conv2": 16, "conv3": 32, "conv4": 32, "conv5": 64, "conv6": 64, "fc1": 128}
VGG_PLAN = ("conv1", "conv2", "M", "conv3", "conv4", "M", "conv5", "conv6", "M")
# the paper's backbone (FACIL's VGG11 with BatchNorm): 8 conv layers, two 4096-unit linear layers
VGG11_SIZES = {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 256, "conv5": 512, "conv6": 512, "conv7": 512,
               "conv8": 512, "fc1": 4096, "fc2": 4096}
VGG11_PLAN = ("conv1", "M", "conv2", "M", "conv3", "conv4", "M", "conv5", "conv6", "M", "conv7", "conv8", "M")
LENET_SIZES = {"conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84}


def _link(units, spatial):
    """Record who reads each layer (for growth): the next unit layer, or the heads after the last."""
    for layer, nxt in zip(units, units[1:] + [None]):
        layer.consumer = None if nxt is None else nxt.module
        layer.inputs_per_unit = spatial if (layer.is_conv and nxt is not None and not nxt.is_conv) else 1
        layer.growable = True


def pool_to(side, out):
    """An average pool from a ``side`` x ``side`` map to ``out`` x ``out`` that every device runs.

    ``AdaptiveAvgPool2d`` with an input that is not a multiple of its output (3 -> 2 for the VGG at
    28 px) is refused by Apple MPS (PyTorch issue 96056). For out = 1 or 2 its windows all have the
    same size, so a plain ``AvgPool2d`` computes exactly the same (bit for bit on the CPU at 3 -> 2).
    """
    if out == 1:
        return nn.AvgPool2d(side)
    if out != 2 or side < 2:
        raise ConfigError(f"cannot pool a {side}x{side} map to {out}x{out}")
    return nn.AvgPool2d(kernel_size=-(-side // 2), stride=side // 2)


def _plain_body(arch, plan, defaults, input_size, sizes=None):
    """Conv (3x3, BatchNorm) layers in ``plan`` order with 2x2 max-pools at "M" (skipped once the map
    is 1 px), an average pool, then the linear unit layers: the VGG family, growable layer by layer."""
    sizes = {**defaults, **(sizes or {})}
    out = 2 if arch == "vgg" else 1  # the small VGG keeps a 2x2 map (4 inputs per channel), VGG11 a vector
    layers, units, channels, side = [], [], IN_CHANNELS, input_size
    for name in plan:
        if name == "M":
            if side >= 2:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            continue
        w = sizes[name]
        conv = nn.Conv2d(channels, w, 3, padding=1, bias=False)
        norm = FrozenAwareBatchNorm(w)
        mask = UnitMask()
        layers += [conv, norm, mask, nn.ReLU()]
        units.append(UnitLayer(name, conv, norm, mask))
        channels = w
    if side < out:
        raise ConfigError(f"{arch} needs inputs of at least {out * 2 ** plan.count('M')} px, not {input_size}")
    layers += [pool_to(side, out), nn.Flatten()]
    width = channels * out * out
    for name in (n for n in sizes if n.startswith("fc")):
        linear = GrowingLinear(width, sizes[name])
        mask = UnitMask()
        layers += [linear, mask, nn.ReLU()]
        units.append(UnitLayer(name, linear, None, mask))
        width = sizes[name]
    _link(units, spatial=out * out)
    return nn.Sequential(*layers), units


def _vgg_body(input_size, sizes=None):
    return _plain_body("vgg", VGG_PLAN, VGG_SIZES, input_size, sizes)


def _vgg11_body(input_size, sizes=None):
    return _plain_body("vgg11", VGG11_PLAN, VGG11_SIZES, input_size, sizes)


def _lenet_body(input_size, sizes=None):
    sizes = {**LENET_SIZES, **(sizes or {})}
    conv1, conv2 = nn.Conv2d(IN_CHANNELS, sizes["conv1"], 5), nn.Conv2d(sizes["conv1"], sizes["conv2"], 5)
    m1, m2 = UnitMask(), UnitMask()
    conv_part = nn.Sequential(conv1, m1, nn.ReLU(), nn.MaxPool2d(2), conv2, m2, nn.ReLU(), nn.MaxPool2d(2))
    with torch.no_grad():
        out_hw = conv_part(torch.zeros(1, IN_CHANNELS, input_size, input_size)).shape[-2:]
    spatial = int(out_hw[0] * out_hw[1])
    fc1, fc2 = GrowingLinear(sizes["conv2"] * spatial, sizes["fc1"]), GrowingLinear(sizes["fc1"], sizes["fc2"])
    m3, m4 = UnitMask(), UnitMask()
    body = nn.Sequential(*conv_part, nn.Flatten(), fc1, m3, nn.ReLU(), fc2, m4, nn.ReLU())
    units = [
        UnitLayer("conv1", conv1, None, m1),
        UnitLayer("conv2", conv2, None, m2),
        UnitLayer("fc1", fc1, None, m3),
        UnitLayer("fc2", fc2, None, m4),
    ]
    _link(units, spatial=spatial)
    return body, units


def _resnet18_body(input_size, sizes=None):
    """torchvision's ResNet-18 for small inputs: 3x3 stride-1 stem, no max-pool, no fc.

    Each BatchNorm becomes ``Sequential(BatchNorm, UnitMask)`` so that torchvision's block
    structure (and zennit's ResNet canonizer, which rewrites the block's forward) stays intact.
    """
    from torchvision.models.resnet import resnet18

    net = resnet18(num_classes=1, norm_layer=FrozenAwareBatchNorm)
    net.conv1 = nn.Conv2d(IN_CHANNELS, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    units = []

    def wrap(parent, attr, conv, name):
        norm = getattr(parent, attr)
        mask = UnitMask()
        setattr(parent, attr, nn.Sequential(norm, mask))
        units.append(UnitLayer(name, conv, norm, mask))

    wrap(net, "bn1", net.conv1, "stem")
    for lname in ("layer1", "layer2", "layer3", "layer4"):
        for b, block in enumerate(getattr(net, lname)):
            block.relu = nn.ReLU()  # zennit hooks do not mix with in-place activations
            wrap(block, "bn1", block.conv1, f"{lname}.{b}.conv1")
            wrap(block, "bn2", block.conv2, f"{lname}.{b}.conv2")
            if block.downsample is not None:
                conv, norm = block.downsample[0], block.downsample[1]
                mask = UnitMask()
                block.downsample.append(mask)
                units.append(UnitLayer(f"{lname}.{b}.downsample", conv, norm, mask))
    net.relu = nn.ReLU()
    return net, units


_BUILDERS = {"vgg": _vgg_body, "vgg11": _vgg11_body, "lenet": _lenet_body, "resnet18": _resnet18_body}


def build_net(arch="vgg", input_size=28, head_sizes=(), layer_sizes=None):
    """A fresh :class:`UnitNet` of ``arch`` for square RGB inputs of ``input_size`` pixels.

    ``layer_sizes`` rebuilds a network whose layers grew (all but resnet18).
    """
    if arch not in _BUILDERS:
        raise ConfigError(f"unknown network '{arch}'; choose one of {', '.join(NETS)}")
    if arch == "lenet" and input_size < 16:
        raise ConfigError(f"lenet needs inputs of at least 16 px, not {input_size}")
    if arch == "resnet18" and layer_sizes:
        raise ConfigError("resnet18 layers cannot grow; its layer sizes are fixed")
    body, units = _BUILDERS[arch](input_size, layer_sizes)
    net = UnitNet(body, units, arch, input_size)
    for k in head_sizes:
        net.add_head(k)
    return net
