"""Compact sub-networks: the kept units' weights alone compute what the masked pass computes."""
import threading

import numpy as np
import pytest
import torch

from conftest import FAST
from rerelrp.errors import StopRequested
from rerelrp.lrp.relevance import unit_activation
from rerelrp.method.learner import ReReLRP
from rerelrp.method.subnetworks import Subnetworks
from rerelrp.model.compact import compact
from rerelrp.model.growth import grow_layer
from rerelrp.model.nets import build_net


def _masked(net, kept, head, x):
    """The reference: every unit computed, the unkept ones multiplied by zero."""
    masks = {name: k[None].float().expand(len(x), -1) for name, k in kept.items()}
    with net.unit_outputs(reduce=unit_activation) as stored, net.subnetworks(masks), torch.no_grad():
        out = net(x)
        acts = torch.cat([stored[layer.name] for layer in net.unit_layers], 1)
    lo = sum(h.out_features for h in net.heads[:head])
    return out[:, lo : lo + net.heads[head].out_features], acts


def _trained_like(net):
    """Random BatchNorm statistics and affine terms, so that folding them into the convolutions is tested."""
    with torch.no_grad():
        for layer in net.unit_layers:
            if layer.norm is not None:
                n = layer.n_units
                layer.norm.running_mean.uniform_(-0.5, 0.5), layer.norm.running_var.uniform_(0.5, 2.0)
                layer.norm.weight.uniform_(0.5, 1.5), layer.norm.bias.uniform_(-0.2, 0.2)
                assert layer.norm.running_mean.shape == (n,)
    return net.eval()


@pytest.mark.parametrize("arch,size", [("vgg", 28), ("vgg11", 32), ("lenet", 28)])
def test_compact_subnetwork_computes_what_the_masked_pass_computes(arch, size):
    torch.manual_seed(0)
    net = build_net(arch, size, head_sizes=[3, 4])
    grow_layer(net, net.unit_layers[1].name, 5, np.zeros(net.unit_layers[2].n_units, bool))  # a grown layer too
    net = _trained_like(net)
    generator = torch.Generator().manual_seed(1)
    kept = {layer.name: torch.rand(layer.n_units, generator=generator) < 0.4 for layer in net.unit_layers}
    for k in kept.values():
        k[0] = True
    x = torch.rand(6, 3, size, size)
    logits, acts = compact(net, kept, 1)(x)
    ref_logits, ref_acts = _masked(net, kept, 1, x)
    assert torch.allclose(logits, ref_logits, atol=1e-4, rtol=1e-4) and torch.equal(logits.argmax(1), ref_logits.argmax(1))
    assert torch.allclose(acts, ref_acts, atol=1e-4, rtol=1e-4)
    off = ~torch.cat(list(kept.values()))
    assert torch.all(acts[:, off] == 0) and torch.any(acts[:, ~off] != 0)


def test_compact_declines_what_it_cannot_slice():
    net = build_net("vgg", 28, head_sizes=[2]).eval()
    every = {layer.name: torch.ones(layer.n_units, dtype=torch.bool) for layer in net.unit_layers}
    assert compact(net, every, 0) is not None
    assert compact(net.train(), every, 0) is None  # batch statistics: no folding
    net.eval()
    empty = dict(every, conv3=torch.zeros(net.layer_sizes["conv3"], dtype=torch.bool))
    assert compact(net, empty, 0) is None
    resnet = build_net("resnet18", 32, head_sizes=[2]).eval()
    assert compact(resnet, {layer.name: torch.ones(layer.n_units, dtype=torch.bool) for layer in resnet.unit_layers}, 0) is None


def test_predictions_never_use_compact_subnetworks_of_weights_that_changed(demo_tasks, monkeypatch):
    """The learner keeps compact sub-networks between predictions; a new task (or undoing one) must not
    leave one behind: every sub-network's class in predict() equals its own head's answer, before and after."""
    learner = ReReLRP(**FAST, min_free=0.5)  # layers grow on the way: the memo's columns must move
    images = np.concatenate([t.test.images[:8] for t in demo_tasks[:3]])

    def agrees():
        pred = learner.predict(images)
        return all(np.array_equal(pred.subnet_class[:, m], learner.subnetwork_logits(images, m).argmax(1).numpy())
                   for m in range(learner.n_tasks))

    learner.add_task(demo_tasks[0]).add_task(demo_tasks[1])
    assert agrees() and len(learner.compact_) == 2
    memo = {}
    learner.predict(images, memo=memo)  # testing after task 1 remembers both sub-networks' forward rows
    assert memo["units"].shape == (len(images), 2, learner.ledger_.n_units)  # activations only: no zero relevance half
    before_sizes = dict(learner.ledger_.layer_sizes)
    stop = threading.Event()
    stop.set()
    with pytest.raises(StopRequested):  # a stopped task rolls the network back to a rebuilt copy
        learner.add_task(demo_tasks[2], stop=stop)
    assert not learner.compact_ and learner.n_tasks == 2 and agrees()
    learner.add_task(demo_tasks[2])
    assert agrees() and learner.predict(images).p_task.shape == (len(images), 3)
    seen, real = [], Subnetworks.forward_stacked
    monkeypatch.setattr(Subnetworks, "forward_stacked", lambda self, x, tasks: seen.append(list(tasks)) or real(self, x, tasks))
    again, fresh = learner.predict(images, memo=memo), learner.predict(images)
    assert seen[0] == [2] and all(s == [0, 1, 2] for s in seen[1:])  # the memo ran only the new sub-network
    assert learner.ledger_.layer_sizes != before_sizes  # a layer grew after the memo was made
    assert np.array_equal(again.subnet_class, fresh.subnet_class) and np.allclose(again.p_task, fresh.p_task, atol=1e-5)
