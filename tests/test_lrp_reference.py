"""The specialised z+ rule and the unit-relevance read-out against LRP written as plain matrix algebra.

As zennit's own tests/unit/test_rules.py does for its rules: each rule is restated from its definition
(a conv as a matrix product over unfolded patches) in float64, on tiny layers and a tiny network, and
the project's numbers must agree to float32 precision. Another composite, a changed stabiliser or a
read-out taken at the wrong place changes them by far more than the tolerance.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zennit.composites import LayerMapComposite
from zennit.rules import Pass

from rerelrp.lrp.relevance import COMPOSITE_FACTORIES, NORM_EPS, NonNegativeZPlus, RelevanceReader
from rerelrp.model.nets import UnitLayer, UnitMask, UnitNet
from rerelrp.settings import COMPOSITES

EPS = 1e-6  # the stabiliser of every rule here (zennit's default)
TIGHT = dict(rtol=1e-5, atol=1e-7)


def stabilise(z):
    """zennit's stabiliser: z + eps * sign(z), with sign(0) = +1."""
    return z + EPS * (z.sign() + (z == 0).to(z))


def dense_zplus(x, w, b, r_out):
    """z+ for a dense layer with inputs x >= 0: R_i = sum_j x_i w+_ji / (sum_i x_i w+_ji + b+_j + eps) R_j."""
    wp, bp = w.clamp(min=0), b.clamp(min=0)
    return x * ((r_out / (x @ wp.T + bp + EPS)) @ wp)


def dense_epsilon(x, w, b, r_out):
    """The epsilon rule: R_i = sum_j x_i w_ji / stab(sum_i x_i w_ji + b_j) R_j."""
    return x * ((r_out / stabilise(x @ w.T + b)) @ w)


def conv_as_matrix(w, x_shape, padding):
    """A conv of ``w`` on inputs of ``x_shape`` as (to patches, from patches, weight matrix)."""
    k = w.shape[-1]
    to_patches = lambda x: F.unfold(x, k, padding=padding)  # (N, C k k, L)
    from_patches = lambda p: F.fold(p, x_shape[-2:], k, padding=padding)
    return to_patches, from_patches, w.reshape(w.shape[0], -1)


def conv_zplus(x, w, b, r_out, padding):
    """z+ for a conv: the dense rule applied to every output position's patch, summed back onto the image."""
    to_patches, from_patches, matrix = conv_as_matrix(w, x.shape, padding)
    wp, bp = matrix.clamp(min=0), (torch.zeros(len(w), dtype=x.dtype) if b is None else b).clamp(min=0)
    patches = to_patches(x)
    z = wp @ patches + bp[:, None]
    return x * from_patches(wp.T @ (r_out.flatten(2) / (z + EPS)))


def conv_flat(x, w, r_out, padding):
    """The flat rule of the first layer: inputs and weights all one, no bias, relevance spread evenly."""
    to_patches, from_patches, matrix = conv_as_matrix(w, x.shape, padding)
    ones = torch.ones_like(matrix)
    z = ones @ to_patches(torch.ones_like(x))
    return from_patches(ones.T @ (r_out.flatten(2) / stabilise(z)))


def mean_pool_norm(x, r_out):
    """The norm rule of a global average pool: each position's share of its channel's mean."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return x / x[0, 0].numel() * r_out[..., None, None] / stabilise(mean)


def double(*modules):
    return [{k: v.detach().double() for k, v in m.named_parameters()} for m in modules]


def test_zplus_of_a_dense_pair_is_the_matrix_form():
    """Linear -> ReLU -> Linear on inputs >= 0, z+ at both layers (ReLU passes relevance on)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.rand(4, 6)
    r_out = torch.rand(4, 3)
    composite = LayerMapComposite(layer_map=[(nn.Linear, NonNegativeZPlus()), (nn.ReLU, Pass())])
    with composite.context(model):
        x_in = x.clone().requires_grad_(True)
        (ours,) = torch.autograd.grad(model(x_in), x_in, grad_outputs=r_out)
    p1, p2 = double(model[0], model[2])
    x64 = x.double()
    hidden = torch.relu(x64 @ p1["weight"].T + p1["bias"])
    r_hidden = dense_zplus(hidden, p2["weight"], p2["bias"], r_out.double())
    reference = dense_zplus(x64, p1["weight"], p1["bias"], r_hidden)
    assert torch.allclose(ours.double(), reference, **TIGHT)


@pytest.mark.parametrize("bias", [False, True])
def test_zplus_of_a_conv_is_the_matrix_form(bias):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
    x = torch.rand(2, 3, 5, 5)
    r_out = torch.rand(2, 4, 5, 5)
    with LayerMapComposite(layer_map=[(nn.Conv2d, NonNegativeZPlus())]).context(conv):
        x_in = x.clone().requires_grad_(True)
        (ours,) = torch.autograd.grad(conv(x_in), x_in, grad_outputs=r_out)
    (p,) = double(conv)
    reference = conv_zplus(x.double(), p["weight"], p.get("bias"), r_out.double(), padding=1)
    assert torch.allclose(ours.double(), reference, **TIGHT)


SIDE = 5


def tiny_net():
    """conv1 -> conv2 -> global mean -> fc1 -> two heads, each unit layer ending in its mask, as in ours."""
    torch.manual_seed(2)
    conv1, conv2, fc1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Conv2d(4, 5, 3, padding=1), nn.Linear(5, 6)
    m1, m2, m3 = UnitMask(), UnitMask(), UnitMask()
    body = nn.Sequential(conv1, m1, nn.ReLU(), conv2, m2, nn.ReLU(), nn.AvgPool2d(SIDE), nn.Flatten(), fc1, m3,
                         nn.ReLU())
    units = [UnitLayer("conv1", conv1, None, m1), UnitLayer("conv2", conv2, None, m2), UnitLayer("fc1", fc1, None, m3)]
    net = UnitNet(body, units, "tiny", SIDE)
    net.add_head(2)
    net.add_head(3)
    return net.eval()


def reference_lrp(net, x, masks, heads, targets):
    """EpsilonPlusFlat with our z+ as matrices: flat at conv1, z+ at conv2, norm at the pool, epsilon at
    fc1 and the heads; the relevance of a unit is what arrives at its mask's output (summed over space)."""
    (c1, c2, f1), head_params = double(*(u.module for u in net.unit_layers)), double(*net.heads)
    m = {k: v.double() for k, v in masks.items()}
    x = x.double()
    a1 = F.conv2d(x, c1["weight"], padding=1) * m["conv1"][..., None, None]
    h1 = torch.relu(a1)
    a2 = F.conv2d(h1, c2["weight"], c2["bias"], padding=1) * m["conv2"][..., None, None]
    h2 = torch.relu(a2)
    pooled = h2.mean(dim=(2, 3))
    a3 = (pooled @ f1["weight"].T + f1["bias"]) * m["fc1"]
    h3 = torch.relu(a3)
    r3 = torch.zeros_like(h3)
    logits = []
    for i, (t, c) in enumerate(zip(heads.tolist(), targets.tolist())):
        w, b = head_params[t]["weight"], head_params[t]["bias"]
        logits.append(h3[i] @ w.T + b)
        r3[i] = dense_epsilon(h3[i : i + 1], w, b, F.one_hot(torch.tensor([c]), len(b)).double())[0]
    r_pooled = dense_epsilon(pooled, f1["weight"], f1["bias"], r3 * m["fc1"])
    r2 = mean_pool_norm(h2, r_pooled)
    r1 = conv_zplus(h1, c2["weight"], c2["bias"], r2 * m["conv2"][..., None, None], padding=1)
    heat = conv_flat(x, c1["weight"], r1 * m["conv1"][..., None, None], padding=1).sum(1)
    per_unit = [r1.sum(dim=(2, 3)), r2.sum(dim=(2, 3)), r3]
    activations = [h1.mean(dim=(2, 3)), h2.mean(dim=(2, 3)), h3]
    return logits, per_unit, activations, heat


def test_the_unit_relevance_read_out_is_the_matrix_form():
    """Every image through its own sub-network and head, in one batch, as the learner reads it."""
    net = tiny_net()
    x = torch.rand(4, 3, SIDE, SIDE)
    offsets, heads, targets = [0, 2, 5], torch.tensor([0, 1, 1, 0]), torch.tensor([1, 2, 0, 0])
    masks = {u.name: torch.ones(4, u.n_units) for u in net.unit_layers}
    masks["conv1"][1, 0] = masks["conv2"][2, [1, 3]] = masks["fc1"][3, 2] = 0  # per-sample sub-networks
    with RelevanceReader(net, "EpsilonPlusFlat", max_batch=4) as reader:
        ours = reader(x, offsets, heads, masks, targets, heatmap=True)
    logits, per_unit, activations, heat = reference_lrp(net, x, masks, heads, targets)
    for i, row in enumerate(logits):
        assert torch.allclose(ours.logits[i, : len(row)].double(), row, **TIGHT)
    sizes = torch.stack([r.abs().sum(1) for r in per_unit], 1)
    normalised = torch.cat([r / (r.abs().sum(1, keepdim=True) + NORM_EPS) for r in per_unit], 1)
    assert torch.allclose(ours.layer_norms.double(), sizes, **TIGHT)
    assert torch.allclose(ours.units.double(), normalised, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours.activations.double(), torch.cat(activations, 1), **TIGHT)
    assert torch.allclose(ours.heatmap.double(), heat, **TIGHT)
    assert ours.units[1, 0] == ours.units[2, 4 + 1] == ours.units[2, 4 + 3] == 0  # units switched off get none
    assert torch.equal(ours.start_class, targets)


def test_the_composites_are_a_registry_of_the_settings_names():
    assert tuple(COMPOSITE_FACTORIES) == COMPOSITES
