"""A sub-network as a small dense network of its own units, for forward passes.

A masked forward pass computes every unit of the shared network and zeroes those the sub-network
does not keep; an old task's sub-network may keep a third of each layer, so most of a convolution's
work is thrown away. Slicing out the kept units' weights (and the kept inputs of the layer after)
computes the same function, since a switched-off unit outputs exactly zero and nothing else reads
it, at the cost of the kept units alone. The slices of an old task are of frozen weights, so its
sub-network gives the same bits after every later task. BatchNorm is folded into the convolution
before it (eval mode only); on the CPU the weights are kept channels-last, which convolves faster
there. Plain sequential bodies only (the VGG family, LeNet): a residual body has no single chain of
kept inputs, so :func:`compact` returns None and callers take the masked pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rerelrp.lrp.relevance import unit_activation
from rerelrp.model.nets import FrozenAwareBatchNorm, UnitMask
from rerelrp.model.units import layer_starts

PASSING = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d)  # modules that act channel by channel: kept as they are


class CompactNet:
    """One sub-network's kept units as dense layers: ``(logits, activations)`` of a batch.

    ``activations`` is (n, U) over all units of the shared network, zero where the sub-network
    keeps none (as a masked pass reads them)."""

    def __init__(self, steps, head_weight, head_bias, columns, n_units):
        self.steps, self.head_weight, self.head_bias = steps, head_weight, head_bias
        self.columns, self.n_units = columns, n_units

    @torch.no_grad()
    def __call__(self, x):
        acts = []
        for kind, op in self.steps:
            x = op(x)
            if kind == "unit":
                acts.append(unit_activation(x))
        out = torch.zeros(len(x), self.n_units, device=x.device)
        out[:, self.columns] = torch.cat(acts, 1)
        return F.linear(x, self.head_weight, self.head_bias), out


def compact(net, kept, head):
    """The :class:`CompactNet` of ``net`` keeping ``kept`` (layer name -> bool tensor (units,)) read through
    head number ``head``; None when ``net`` is in training mode or its body is not a plain chain."""
    if net.training or not isinstance(net.body, nn.Sequential):
        return None
    layers = {id(layer.module): layer for layer in net.unit_layers}
    norms = {id(layer.norm) for layer in net.unit_layers if layer.norm is not None}
    starts = dict(zip(net.layer_sizes, layer_starts(net.layer_sizes)))
    steps, inputs, columns, sliced, last = [], None, [], None, None
    for module in net.body:
        layer = layers.get(id(module))
        if layer is not None:
            keep = torch.nonzero(kept[layer.name]).flatten().to(module.weight.device)
            if not len(keep):
                return None  # a layer with no unit: the masked pass gives its constant output
            sliced = _Sliced(module, keep, inputs)
            columns.append(int(starts[layer.name]) + keep)
            inputs, last = keep, layer
        elif isinstance(module, FrozenAwareBatchNorm) and id(module) in norms and sliced is not None:
            sliced.fold(module)
        elif isinstance(module, UnitMask) and sliced is not None:
            steps.append(("unit", sliced.function()))
            sliced = None
        elif isinstance(module, PASSING):
            steps.append(("pass", module))
        elif isinstance(module, nn.Flatten) and last is not None:
            steps.append(("pass", module))
            spread = torch.arange(last.inputs_per_unit, device=inputs.device)
            inputs = (inputs[:, None] * last.inputs_per_unit + spread[None]).flatten()
        else:
            return None
    weight = net.heads[head].weight
    return CompactNet(steps, weight[:, inputs] if inputs is not None else weight, net.heads[head].bias,
                      torch.cat(columns).to(weight.device), sum(net.layer_sizes.values()))


class _Sliced:
    """One unit layer's kept rows (``keep``) and kept input columns (``inputs``; None: all), BatchNorm folded in."""

    def __init__(self, module, keep, inputs):
        self.module, self.keep = module, keep
        self.weight = module.weight[keep] if inputs is None else module.weight[keep][:, inputs]
        self.bias = None if module.bias is None else module.bias[keep]

    def fold(self, norm):
        """Fold eval-mode ``norm`` (running statistics) into the weights and bias."""
        scale = norm.weight[self.keep] / torch.sqrt(norm.running_var[self.keep] + norm.eps)
        shift = norm.bias[self.keep] - norm.running_mean[self.keep] * scale
        self.bias = shift if self.bias is None else shift + self.bias * scale
        self.weight = self.weight * scale.view(-1, *([1] * (self.weight.dim() - 1)))

    def function(self):
        """The sliced layer as a function of its input batch."""
        module, bias = self.module, self.bias
        if isinstance(module, nn.Conv2d):  # channels-last convolves faster on the CPU (measured there only)
            layout = torch.channels_last if self.weight.device.type == "cpu" else torch.contiguous_format
            weight = self.weight.contiguous(memory_format=layout)
            return lambda x: F.conv2d(x, weight, bias, module.stride, module.padding, module.dilation)
        weight = self.weight.contiguous()
        return lambda x: F.linear(x, weight, bias)
