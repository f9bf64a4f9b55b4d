"""Layer-wise relevance propagation with zennit, batched over samples and sub-networks.

One call runs one forward and one modified backward pass for a batch in which every sample
may go through a different sub-network (see :class:`rerelrp.model.nets.UnitMask`). Under a zennit
composite the modified gradient arriving at a unit's output already is that unit's relevance,
so it is read as it is (summed over space for a conv channel), never multiplied by the
activation again.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlusFlat
from zennit.core import BasicHook
from zennit.rules import ClampMod, Pass
from zennit.torchvision import ResNetCanonizer
from zennit.types import Activation, BatchNorm, Convolution

from rerelrp.errors import ConfigError
from rerelrp.settings import COMPOSITES

NORM_EPS = 1e-12


class RuleOnly:
    """A zennit hook whose layer's own backward never runs: only the rule's.

    zennit's hooks let autograd run each layer's backward, then throw its result away for the
    rule's. Here the layer reads a detached input and its output is linked back to the input
    through the rule alone (:class:`_RuleLink`), so the same relevance costs one backward less
    per layer. The rule is the hook's own ``backward``, called as zennit calls it.
    """

    def pre_forward(self, module, input):
        if not input[0].requires_grad:
            return None
        self.stored_tensors["attached"] = input[0]
        return input[0].detach()

    def post_forward(self, module, input, output):
        attached = self.stored_tensors.pop("attached", None)
        if attached is None:
            return None
        return _RuleLink.apply(output, attached, lambda grad: self.backward(module, input, (grad,))[0])


class _RuleLink(torch.autograd.Function):
    """A layer's output whose gradient goes to the layer's input through ``rule`` only."""

    @staticmethod
    def forward(ctx, output, attached, rule):
        ctx.rule = rule
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.rule(grad), None


class PassOn(RuleOnly, Pass):
    """zennit's pass rule (a layer hands relevance on unchanged), without the layer's own backward."""


class NonNegativeZPlus(RuleOnly, BasicHook):
    """zennit's z+ rule for layers whose inputs are never negative (they follow a ReLU).

    zennit's ZPlus also propagates through negative inputs with negative weights; with inputs
    >= 0 that second pass is exactly zero, so dropping it gives the same relevance for about
    half the work. Every conv layer after the first in our backbones reads post-ReLU values.
    Its outputs are then never negative either (inputs, weights and bias all >= 0), so zennit's
    stabiliser, ``z + (sign(z) + [z == 0]) * eps``, is ``z + eps`` bit for bit (tested) in one
    operation instead of five.
    """

    def __init__(self, epsilon=1e-6):
        super().__init__(
            input_modifiers=[lambda input: input],
            param_modifiers=[ClampMod(min=0.0)],
            output_modifiers=[lambda output: output],
            gradient_mapper=lambda out_grad, outputs: [out_grad / (outputs[0] + epsilon)],
            reducer=lambda inputs, gradients: inputs[0] * gradients[0],
        )


def _epsilon_plus_flat(canonizers, input_shape, device):
    # zennit's own map passes relevance through activations and (merged) BatchNorm with Pass
    passes = [(Activation, PassOn()), (BatchNorm, PassOn())]
    return EpsilonPlusFlat(canonizers=canonizers, layer_map=[(Convolution, NonNegativeZPlus()), *passes])


def _epsilon_alpha2_beta1_flat(canonizers, input_shape, device):
    return EpsilonAlpha2Beta1Flat(canonizers=canonizers)


def _epsilon_gamma_box(canonizers, input_shape, device):
    # inputs live in [0, 1]; ZBox slices its bounds to the batch, so give it a batch-sized view
    low = torch.zeros((1,) + tuple(input_shape[1:]), device=device).expand(input_shape)
    high = torch.ones((1,) + tuple(input_shape[1:]), device=device).expand(input_shape)
    return EpsilonGammaBox(low=low, high=high, canonizers=canonizers)


# name -> factory(canonizers, input_shape, device), zennit's habit for named things; the names are
# the settings' COMPOSITES (a test keeps the two the same)
COMPOSITE_FACTORIES = {
    "EpsilonPlusFlat": _epsilon_plus_flat,
    "EpsilonGammaBox": _epsilon_gamma_box,
    "EpsilonAlpha2Beta1Flat": _epsilon_alpha2_beta1_flat,
}


def make_composite(name, arch, input_shape, device):
    """A zennit composite with the canonizers that ``arch`` needs (BatchNorm merged, ResNet sums)."""
    if name not in COMPOSITE_FACTORIES:
        raise ConfigError(f"unknown composite '{name}'; choose one of {', '.join(COMPOSITES)}")
    canonizers = [ResNetCanonizer()] if arch == "resnet18" else [SequentialMergeBatchNorm()]
    return COMPOSITE_FACTORIES[name](canonizers, input_shape, device)


def sample_masks(group_masks, groups):
    """Per-sample masks from per-sub-network masks: ``group_masks[name]`` is (G, units), ``groups`` (N,)."""
    return {name: m[groups] for name, m in group_masks.items()}


@dataclass
class LrpResult:
    """What one batched LRP pass returns, all on the CPU."""

    logits: torch.Tensor  # (N, k) logits of each sample's own head
    start_class: torch.Tensor  # (N,) local class the explanation started at
    units: torch.Tensor | None  # (N, total units) relevance per unit, L1-normalised per sample and layer
    heatmap: torch.Tensor | None  # (N, H, W) input relevance summed over colour channels
    layer_norms: torch.Tensor | None = None  # (N, layers) L1 size of each layer's relevance before normalising
    activations: torch.Tensor | None = None  # (N, total units) mean post-ReLU output of each unit (same pass)


def own_head_logits(all_logits, offsets, head_of):
    """Each sample's logits through its own head, padded with -inf to the widest head."""
    widths = torch.tensor(np.diff(offsets), device=all_logits.device)
    k = int(widths.max())
    cols = torch.as_tensor(offsets[:-1], device=all_logits.device)[head_of][:, None] + torch.arange(k, device=all_logits.device)
    valid = torch.arange(k, device=all_logits.device)[None, :] < widths[head_of][:, None]
    gathered = all_logits.gather(1, cols.clamp(max=all_logits.shape[1] - 1))
    return gathered.masked_fill(~valid, float("-inf"))


class RelevanceReader:
    """Runs batched LRP on a :class:`UnitNet` under one composite; enter it once, call it per batch.

    Entering registers the composite's hooks and canonizers (a merge of every BatchNorm), so a
    whole loop of batches pays that cost once.
    """

    def __init__(self, net, composite="EpsilonPlusFlat", max_batch=1024):
        self.net = net
        self.composite_name = composite
        self.max_batch = max_batch
        self._stored = {}
        self._undo = None

    def __enter__(self):
        device = next(self.net.parameters()).device
        input_size = self.net.input_size
        composite = make_composite(self.composite_name, self.net.arch, (self.max_batch, 3, input_size, input_size), device)
        with ExitStack() as stack:  # a failure half-way undoes what was entered
            stack.enter_context(composite.context(self.net))
            self._stored = stack.enter_context(self.net.unit_outputs())
            self._undo = stack.pop_all()
        return self

    def __exit__(self, *exc):
        undo, self._undo = self._undo, None
        return undo.__exit__(*exc)

    def __call__(self, x, offsets, head_of, masks=None, targets=None, units=True, heatmap=False):
        """LRP for a batch.

        x: (N, 3, H, W) inputs; offsets: class offsets of the heads (len T+1); head_of: (N,) the head
        (task) each sample is read through; masks: per-sample masks or None for the full network;
        targets: (N,) local classes to start at, or None to start at each sample's predicted class.
        """
        if x.shape[0] > self.max_batch:
            raise ValueError(f"batch of {x.shape[0]} exceeds max_batch {self.max_batch}")
        self._stored.clear()
        x = x.detach().requires_grad_(heatmap)
        with torch.enable_grad(), self.net.subnetworks(masks):
            all_logits = self.net(x)
            logits = own_head_logits(all_logits, offsets, head_of)
            start = logits.argmax(1) if targets is None else targets
            start_vec = torch.zeros_like(all_logits)
            start_vec[torch.arange(len(x)), torch.as_tensor(offsets[:-1], device=x.device)[head_of] + start] = 1.0
            names = [layer.name for layer in self.net.unit_layers] if units else []
            inputs = [self._stored[n] for n in names] + ([x] if heatmap else [])
            grads = torch.autograd.grad(all_logits, inputs, grad_outputs=start_vec)
        unit_rel = norms = acts = None
        if units:
            per_layer, sizes = [], []
            for g in grads[: len(names)]:
                r = g.sum(dim=(2, 3)) if g.dim() == 4 else g
                size = r.abs().sum(1, keepdim=True)
                per_layer.append(r / (size + NORM_EPS))
                sizes.append(size)
            unit_rel = torch.cat(per_layer, 1).detach().cpu()
            norms = torch.cat(sizes, 1).detach().cpu()
            acts = torch.cat([unit_activation(self._stored[n]) for n in names], 1).detach().cpu()
        heat = grads[-1].sum(1).detach().cpu() if heatmap else None
        return LrpResult(logits.detach().cpu(), start.detach().cpu(), unit_rel, heat, norms, acts)


def unit_activation(output):
    """What a unit says about an image in one number: its post-ReLU output, averaged over space.

    In the plain backbones every mask feeds a ReLU, so this is what the next layer reads (in
    ResNet-18 the residual sum comes first: it is the unit's own rectified share). A unit switched
    off in the sub-network reads 0.
    """
    out = torch.relu(output)
    return out.mean(dim=(2, 3)) if out.dim() == 4 else out
