"""Contexts on the network undo every change they made: sub-network selection, the unit-output hooks and
the LRP reader (zennit's hooks and BatchNorm merge) leave parameters, buffers, hooks, masks and modes as
they were, also when the block raises."""
import pytest
import torch

from rerelrp.lrp.relevance import RelevanceReader
from rerelrp.model.nets import build_net


class Boom(Exception):
    pass


def snapshot(net):
    """Everything a context could leave behind: tensor values and identities, every module's attributes
    (hook dicts as copies), its mode and its mask."""
    tensors = dict(net.named_parameters()) | dict(net.named_buffers())
    modules = {}
    for name, m in net.named_modules():
        attrs = {k: dict(v) if isinstance(v, dict) else v for k, v in vars(m).items()
                 if k not in ("_parameters", "_buffers", "_modules")}
        modules[name] = attrs
    return ({k: (id(v), v.detach().clone(), v.requires_grad) for k, v in tensors.items()}, modules)


def assert_same(before, after):
    (tensors, modules), (tensors_after, modules_after) = before, after
    assert tensors.keys() == tensors_after.keys()
    for k, (ident, value, grad) in tensors.items():
        ident_after, value_after, grad_after = tensors_after[k]
        assert ident == ident_after and grad == grad_after and torch.equal(value, value_after), k
    assert modules.keys() == modules_after.keys()
    for name, attrs in modules.items():
        assert attrs.keys() == modules_after[name].keys(), name
        for k, v in attrs.items():
            other = modules_after[name][k]
            assert (torch.equal(v, other) if isinstance(v, torch.Tensor) else v is other or v == other), (name, k)


@pytest.fixture
def net():
    torch.manual_seed(0)
    net = build_net("vgg", 28, head_sizes=[2, 3])
    net.train()
    net(torch.rand(8, 3, 28, 28))  # BatchNorm statistics that are not the identity
    return net.eval()


def masks_of(net, n, off=1):
    masks = {layer.name: torch.ones(n, layer.n_units) for layer in net.unit_layers}
    for m in masks.values():
        m[:, :off] = 0
    return masks


def lrp_pass(net):
    with RelevanceReader(net) as reader:
        reader(torch.rand(3, 3, 28, 28), [0, 2, 5], torch.tensor([0, 1, 0]), masks_of(net, 3), heatmap=True)
        raise Boom


def subnetwork_pass(net):
    with net.subnetworks(masks_of(net, 2)):
        net(torch.rand(2, 3, 28, 28))
        raise Boom


def unit_output_pass(net):
    with net.unit_outputs() as stored:
        net(torch.rand(2, 3, 28, 28))
        assert stored.keys() == set(net.layer_sizes)
        raise Boom


@pytest.mark.parametrize("body", [lrp_pass, subnetwork_pass, unit_output_pass])
@pytest.mark.parametrize("mixed", [False, True])
def test_a_context_leaves_the_network_as_it_was_even_when_its_body_raises(net, body, mixed):
    net.heads.train(mixed)  # a context that set one mode for the whole network would show here
    before = snapshot(net)
    with pytest.raises(Boom):
        body(net)
    assert_same(before, snapshot(net))


def test_a_context_left_normally_leaves_the_network_as_it_was(net):
    before = snapshot(net)
    with RelevanceReader(net) as reader, net.unit_outputs(), net.subnetworks(masks_of(net, 2)):
        reader(torch.rand(2, 3, 28, 28), [0, 2, 5], torch.tensor([1, 0]))
    assert_same(before, snapshot(net))


def test_selection_applies_inside_and_nested_selections_restore_the_outer_one(net):
    x = torch.rand(2, 3, 28, 28)
    outer, inner = masks_of(net, 2, off=1), masks_of(net, 2, off=3)
    with net.subnetworks(outer):
        through_outer = net(x)
        with net.subnetworks(inner):
            assert all(layer.mask.mask is inner[layer.name] for layer in net.unit_layers)
            assert not torch.equal(net(x), through_outer)
        assert all(layer.mask.mask is outer[layer.name] for layer in net.unit_layers)
        assert torch.equal(net(x), through_outer)
    assert all(layer.mask.mask is None for layer in net.unit_layers)


def test_a_selection_missing_a_layer_is_refused_and_changes_nothing(net):
    masks = masks_of(net, 2)
    del masks["fc1"]
    before = snapshot(net)
    with pytest.raises(KeyError), net.subnetworks(masks):
        pass
    assert_same(before, snapshot(net))


def test_unit_outputs_reduce_keeps_only_what_it_returns(net):
    with net.unit_outputs(reduce=lambda out: out.shape) as stored:
        net(torch.rand(2, 3, 28, 28))
    assert stored["conv1"] == (2, 16, 28, 28) and stored["fc1"] == (2, 128)
