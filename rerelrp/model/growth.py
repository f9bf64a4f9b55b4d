"""Growing a saturated layer without changing any sub-network learned so far, bit for bit.

New units are appended to a layer (and new input columns to whatever reads it); a linear layer
whose inputs grew computes them block by block (:class:`GrowingLinear`), so that older
sub-networks keep their outputs exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rerelrp.errors import ConfigError


class GrowingLinear(nn.Linear):
    """A linear layer whose inputs may grow, computed block by block in the order the blocks came.

    BLAS sums a longer row in another order, so appending input columns changes the last bits of
    every output even where the new inputs are zero. Computing the first block exactly as before
    and adding each later block's product (exactly zero for a sub-network older than that block)
    keeps every earlier sub-network bit for bit. ``blocks`` lists each block's end column.
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        self.blocks = [in_features]

    def forward(self, x):
        if len(self.blocks) == 1:
            return super().forward(x)
        first = self.blocks[0]  # a strided slice of x would take another BLAS path: copy it
        out = F.linear(x[:, :first].contiguous(), self.weight[:, :first], self.bias)
        for lo, hi in zip(self.blocks, self.blocks[1:]):
            out = out + F.linear(x[:, lo:hi].contiguous(), self.weight[:, lo:hi])
        return out

    def grow_inputs(self, n_new, frozen_rows, generator):
        """Append ``n_new`` input columns as a new block (zero in ``frozen_rows``)."""
        self.weight = _extend_columns(self.weight, n_new, frozen_rows, generator)
        self.in_features += n_new
        self.blocks.append(self.in_features)


def _extend_rows(tensor, n_new, fill):
    """``tensor`` with ``n_new`` rows appended, filled by ``fill(shape)``; a Parameter stays one."""
    extra = fill((n_new,) + tuple(tensor.shape[1:])).to(tensor.device, tensor.dtype)
    data = torch.cat([tensor.detach(), extra])
    return nn.Parameter(data, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else data


def _extend_columns(weight, n_new, frozen_rows, generator):
    """Append input columns: random (small) for free rows, zero for frozen rows so they stay exact."""
    shape = (weight.shape[0], n_new) + tuple(weight.shape[2:])
    fan_in = weight[0].numel()
    extra = torch.randn(shape, generator=generator) * (1.0 / fan_in) ** 0.5
    extra[torch.as_tensor(frozen_rows, dtype=torch.bool)] = 0.0
    data = torch.cat([weight.detach(), extra.to(weight.device, weight.dtype)], dim=1)
    return nn.Parameter(data, requires_grad=weight.requires_grad)


@torch.no_grad()
def grow_layer(net, name, n_new, consumer_frozen, generator=None):
    """Append ``n_new`` fresh units to layer ``name`` (dynamic capacity for a saturated layer).

    Existing units and everything reading them keep their values bit for bit; the new units'
    outgoing weights are zero in frozen consumer rows (and in old heads), so no sub-network
    learned so far changes. ``consumer_frozen`` marks the frozen rows of the consumer layer.
    """
    layer = next(unit for unit in net.unit_layers if unit.name == name)
    if not layer.growable:
        raise ConfigError(f"layer {name} of {net.arch} cannot grow")
    generator = generator or torch.Generator().manual_seed(0)
    module = layer.module
    fan_in = module.weight[0].numel()
    def he_normal(shape):
        return torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5

    module.weight = _extend_rows(module.weight, n_new, he_normal)
    if module.bias is not None:
        module.bias = _extend_rows(module.bias, n_new, torch.zeros)
    if layer.is_conv:
        module.out_channels += n_new
    else:
        module.out_features += n_new
    if layer.norm is not None:
        norm = layer.norm
        norm.weight = _extend_rows(norm.weight, n_new, torch.ones)
        norm.bias = _extend_rows(norm.bias, n_new, torch.zeros)
        norm.running_mean = _extend_rows(norm.running_mean, n_new, torch.zeros)
        norm.running_var = _extend_rows(norm.running_var, n_new, torch.ones)
        norm.frozen = _extend_rows(norm.frozen, n_new, lambda shape: torch.zeros(shape, dtype=torch.bool))
        norm.num_features += n_new
    columns = n_new * layer.inputs_per_unit
    if layer.consumer is None:
        for head in net.heads:  # every existing head belongs to a learned task: new columns stay zero
            head.grow_inputs(columns, torch.ones(head.out_features, dtype=torch.bool), generator)
    else:
        consumer = layer.consumer
        rows = torch.as_tensor(consumer_frozen, dtype=torch.bool)
        if isinstance(consumer, nn.Conv2d):  # oneDNN sums channels in order: zero inputs appended change no bit
            consumer.weight = _extend_columns(consumer.weight, columns, rows, generator)
            consumer.in_channels += columns
        else:
            consumer.grow_inputs(columns, rows, generator)
