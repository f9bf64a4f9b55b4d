"""The method's guarantees: exact preservation, rollback on stop, the cut search, the chain."""
import threading

import numpy as np
import pytest
import torch

from conftest import DEVICES, FAST
from rerelrp.errors import ConfigError, StopRequested
from rerelrp.lrp.relevance import RelevanceReader
from rerelrp.method.learner import ReReLRP
from rerelrp.method.pruning import search_cut
from rerelrp.method.recognition import RelevanceStore, chain_probabilities, select_features, signals
from rerelrp.model.growth import grow_layer
from rerelrp.model.inputs import to_input
from rerelrp.model.nets import build_net


@pytest.fixture(scope="module")
def three_task_learner(demo_tasks):
    """Three demo tasks with a min_free so high that layers must grow on the way (the paper's forests:
    their recognisers read relevance, which the memo of earlier LRP serves)."""
    learner = ReReLRP(**FAST, min_free=0.5, recognizer="forest")
    logits = {}
    for t, task in enumerate(demo_tasks[:3]):
        learner.add_task(task)
        logits[t] = learner.subnetwork_logits(task.test.images, t)
        if t == 1:  # what testing after task 1 remembers, for testing again after task 2
            images = np.concatenate([demo_tasks[j].test.images[:20] for j in range(2)])
            memo = {}
            learner.predict(images, memo=memo)
            learner.tested_after_task_1 = (images, memo)
    return learner, logits


def test_old_subnetworks_are_bit_identical_after_later_tasks(three_task_learner, demo_tasks):
    learner, right_after = three_task_learner
    assert any(h.grown for h in learner.history_), "the test should cover layer growth too"
    for t in range(3):
        assert torch.equal(learner.subnetwork_logits(demo_tasks[t].test.images, t), right_after[t])


def test_frozen_units_never_move_under_momentum_and_weight_decay(demo_tasks):
    learner = ReReLRP(**FAST, weight_decay=0.05, momentum=0.9, grow=False)
    learner.add_task(demo_tasks[0])
    kept = learner.ledger_.task(0)
    before = {u.name: u.module.weight.detach().clone() for u in learner.net_.unit_layers}
    stats = {u.name: u.norm.running_mean.clone() for u in learner.net_.unit_layers if u.norm is not None}
    head0 = learner.net_.heads[0].weight.detach().clone()
    learner.add_task(demo_tasks[1])
    learned = 0
    for layer in learner.net_.unit_layers:
        rows = torch.as_tensor(kept[layer.name])
        assert torch.equal(layer.module.weight[rows], before[layer.name][rows])
        if (~rows).any():  # a layer task 0 kept whole has no free units to learn
            assert not torch.equal(layer.module.weight[~rows], before[layer.name][~rows]), "free units should learn"
            learned += 1
        if layer.norm is not None:
            assert torch.equal(layer.norm.running_mean[rows], stats[layer.name][rows])
    assert learned >= 3, "the test should cover layers with free units"
    assert torch.equal(learner.net_.heads[0].weight, head0)


def test_frozen_batchnorm_channels_pass_gradients_as_they_normalise():
    """In training mode a frozen channel normalises with its running statistics; its gradient must
    use them too (the batch-statistics pass updates them in place before the backward pass runs)."""
    from rerelrp.model.nets import FrozenAwareBatchNorm

    torch.manual_seed(0)
    bn = FrozenAwareBatchNorm(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.running_var.uniform_(0.5, 2.0)
    frozen = np.array([True, False, True, False])
    bn.set_frozen(frozen)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().clone()
    as_inference = bn.eval()(torch.ones(1, 4, 1, 1)).detach()
    x = (torch.randn(8, 4, 3, 3) * 3.0).requires_grad_(True)  # batch variance far from the running one
    y = bn.train()(x)
    y.sum().backward()
    assert torch.allclose(x.grad[:, frozen], scale[frozen].view(1, -1, 1, 1).expand(8, -1, 3, 3), rtol=1e-6)
    with torch.no_grad():
        assert torch.allclose(y[:, frozen], (x[:, frozen] - 1.0) * scale[frozen].view(1, -1, 1, 1)
                              + as_inference[:, frozen], atol=1e-5)


def test_stop_between_batches_leaves_the_learner_exactly_as_before(demo_tasks):
    learner = ReReLRP(**FAST)
    learner.add_task(demo_tasks[0])
    state = {k: v.clone() for k, v in learner.net_.state_dict().items()}
    prediction = learner.predict(demo_tasks[0].test.images[:20])
    stop, events = threading.Event(), []

    def callback(event):
        events.append(event)
        if event.phase == "train" and event.step == 2:
            stop.set()

    with pytest.raises(StopRequested):
        learner.add_task(demo_tasks[1], callback=callback, stop=stop)
    assert learner.n_tasks == 1 and len(learner.net_.heads) == 1 and learner.ledger_.n_tasks == 1
    assert learner.net_.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in learner.net_.state_dict().items())
    again = learner.predict(demo_tasks[0].test.images[:20])
    assert np.array_equal(again.global_class, prediction.global_class)
    assert max(e.step for e in events if e.phase == "train") == 2  # stopped at once, not at the end
    learner.add_task(demo_tasks[1])  # and it can carry on
    assert learner.n_tasks == 2


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_model(demo_tasks, device):
    a, b = ReReLRP(**FAST, device=device), ReReLRP(**FAST, device=device)
    a.add_task(demo_tasks[0])
    b.add_task(demo_tasks[0])
    assert all(torch.equal(x, y) for x, y in zip(a.net_.state_dict().values(), b.net_.state_dict().values()))
    assert all(np.array_equal(a.ledger_.kept[k], b.ledger_.kept[k]) for k in a.ledger_.layer_sizes)


def test_predict_equals_one_image_through_one_subnetwork_at_a_time(three_task_learner, demo_tasks):
    """The stacked, batched path against the obvious slow one: each image alone, each sub-network alone,
    relevance read at the sub-network's own predicted class, the recognisers, the chain written out."""
    learner, _ = three_task_learner
    images = np.concatenate([demo_tasks[t].test.images[:4] for t in range(3)])
    pred = learner.predict(images)
    ledger, store, offsets = learner.ledger_, learner.store_, learner.offsets_
    x = to_input(images, learner.input_size_)
    for i in range(len(images)):
        p_r = []
        for m in range(3):
            logits = learner.subnetwork_logits(images[i : i + 1], m)[0]
            assert pred.subnet_class[i, m] == int(logits.argmax())
            if m == 2:  # the newest task has no recogniser
                continue
            masks = {name: torch.tensor(k[None], dtype=torch.float32) for name, k in ledger.task(m).items()}
            with RelevanceReader(learner.net_, learner.composite) as reader:
                res = reader(x[i : i + 1], offsets, torch.tensor([m]), masks)
            assert int(res.start_class[0]) == pred.subnet_class[i, m]
            features = signals(res)[0][store.columns(m, ledger.layer_sizes)]
            assert len(store.active[m]) == sum(k.sum() for k in ledger.task(m).values())  # every kept unit's activation
            forest = learner.recognizers_[m]
            p_r.append(forest.predict_proba(features[None])[0, list(forest.classes_).index(1)])
        chain = [p_r[0], (1 - p_r[0]) * p_r[1], (1 - p_r[0]) * (1 - p_r[1])]
        # LRP of one image and of a stacked batch agree to float rounding; a split threshold within that
        # rounding may flip one tree of the 20 (0.05 of a probability), never more here
        assert np.allclose(pred.p_task[i], chain, atol=0.051)
        t = int(np.argmax(pred.p_task[i]))
        assert pred.task[i] == t and pred.local_class[i] == pred.subnet_class[i, t]
        assert pred.global_class[i] == offsets[t] + pred.subnet_class[i, t]
        assert pred.class_name[i] == f"{learner.tasks_[t]['name']}: {learner.tasks_[t]['classes'][pred.local_class[i]]}"


def test_testing_again_after_a_later_task_reuses_the_old_relevance(three_task_learner, monkeypatch):
    """A memo of an earlier test gives what a fresh pass gives (layers grew in between, so the
    remembered columns had to move), and LRP runs only through the sub-network it had not seen."""
    import copy

    from rerelrp.method.subnetworks import Subnetworks

    learner, _ = three_task_learner
    images, memo = learner.tested_after_task_1
    assert memo["tasks"] == 1 and memo["relevance"] and memo["sizes"] != learner.ledger_.layer_sizes
    fresh = learner.predict(images)
    seen = []
    real = Subnetworks.lrp
    monkeypatch.setattr(Subnetworks, "lrp", lambda self, x, groups, **kw: seen.append(groups.unique().tolist())
                        or real(self, x, groups, **kw))
    again = learner.predict(images, memo=copy.deepcopy(memo))
    assert seen == [[1]]
    assert np.array_equal(again.subnet_class, fresh.subnet_class)
    # LRP rows of images stacked differently agree to float rounding (see the test above)
    assert np.allclose(again.p_task, fresh.p_task, atol=0.051) and np.array_equal(again.task, fresh.task)
    runner = learner._subnetworks()
    _, _, by_memo, _, _ = runner.stacked(images, learner.input_size_, memo=copy.deepcopy(memo))
    _, _, by_pass, _, _ = runner.stacked(images, learner.input_size_)
    assert np.allclose(by_memo, by_pass, atol=1e-5)


def test_predict_and_explain_agree_over_several_internal_chunks(three_task_learner, demo_tasks, monkeypatch):
    import rerelrp.model.batching as batching

    learner, _ = three_task_learner
    images = demo_tasks[1].test.images[:10]
    whole = learner.predict(images)
    monkeypatch.setattr(batching, "MAX_BATCH", 4)  # 10 images x 2 recognised sub-networks: 5 chunks of 2 images
    chunked = learner.predict(images)
    assert np.array_equal(chunked.subnet_class, whole.subnet_class)
    assert np.allclose(chunked.p_task, whole.p_task, atol=0.051) and np.array_equal(chunked.task, whole.task)
    exp = learner.explain(images[:3], composite="EpsilonGammaBox", top_k=3)
    assert exp.heatmaps.shape == (3, 3, 28, 28) and np.isfinite(exp.heatmaps).all()
    assert np.array_equal(exp.subnet_class, whole.subnet_class[:3])
    assert len(exp.top_units[0][2]) == 3 and exp.top_units[0][2][0][0] in learner.ledger_.layer_sizes
    relevance = [r for _, _, r in exp.top_units[0][2]]
    assert relevance == sorted(relevance, reverse=True)


@pytest.mark.parametrize("composite", ["EpsilonPlusFlat", "EpsilonAlpha2Beta1Flat", "EpsilonGammaBox"])
def test_every_composite_gives_normalised_unit_relevance_and_a_heatmap(composite):
    torch.manual_seed(0)
    net = build_net("vgg", 28, head_sizes=[2, 3])
    net.train()
    net(torch.rand(16, 3, 28, 28))
    net.eval()
    x, offsets, heads = torch.rand(4, 3, 28, 28), np.array([0, 2, 5]), torch.tensor([0, 1, 1, 0])
    with RelevanceReader(net, composite) as reader:
        res = reader(x, offsets, heads, heatmap=True)
    n1 = net.layer_sizes["conv1"]
    assert torch.allclose(res.units[:, :n1].abs().sum(1), torch.ones(4), atol=1e-4)
    assert torch.isfinite(res.heatmap).all() and (res.heatmap.abs().sum((1, 2)) > 0).all()
    if composite != "EpsilonPlusFlat":
        with RelevanceReader(net) as reader:
            assert not torch.allclose(reader(x, offsets, heads).units, res.units)


def test_subnetwork_only_uses_its_kept_units(three_task_learner, demo_tasks):
    learner, _ = three_task_learner
    x = demo_tasks[0].test.images[:4]
    before = learner.subnetwork_logits(x, 0)
    dropped = [(u, np.flatnonzero(~learner.ledger_.task(0)[u.name])) for u in learner.net_.unit_layers]
    saved = [(u, u.module.weight.detach().clone()) for u, _ in dropped]
    with torch.no_grad():
        for layer, idx in dropped:
            layer.module.weight[torch.as_tensor(idx)] = 1e3  # wreck every unit sub-network 0 did not keep
    try:
        assert torch.equal(learner.subnetwork_logits(x, 0), before)
    finally:
        with torch.no_grad():
            for layer, w in saved:
                layer.module.weight.copy_(w)


def test_growth_keeps_existing_outputs_identical():
    torch.manual_seed(0)
    net = build_net("vgg", 28, head_sizes=[2]).eval()
    x = torch.rand(5, 3, 28, 28)
    before = net(x)
    frozen_rows = np.ones(32, bool)  # every unit of the consumer (conv4) frozen: new columns must be zero
    grow_layer(net, "conv3", 7, frozen_rows)
    masks = {u.name: torch.ones(5, u.n_units) for u in net.unit_layers}
    masks["conv3"][:, -7:] = 0
    with net.subnetworks(masks):
        assert torch.equal(net(x), before)
    assert net.layer_sizes["conv3"] == 39 and net(x).shape == (5, 2)
    rebuilt = build_net("vgg", 28, head_sizes=[2], layer_sizes=net.layer_sizes)
    rebuilt.load_state_dict(net.state_dict())


def test_batched_lrp_matches_one_sample_at_a_time():
    torch.manual_seed(0)
    net = build_net("vgg", 28, head_sizes=[2, 3]).eval()
    x = torch.rand(6, 3, 28, 28)
    offsets = np.array([0, 2, 5])
    heads = torch.tensor([0, 1, 0, 1, 1, 0])
    with RelevanceReader(net) as reader:
        batch = reader(x, offsets, heads, heatmap=True)
        single = [reader(x[i : i + 1], offsets, heads[i : i + 1], heatmap=True) for i in range(6)]
    assert torch.allclose(batch.units, torch.cat([s.units for s in single]), atol=1e-5)
    assert torch.allclose(batch.heatmap, torch.cat([s.heatmap for s in single]), atol=1e-6)
    per_layer = batch.units[:, : net.layer_sizes["conv1"]].abs().sum(1)
    assert torch.allclose(per_layer, torch.ones(6), atol=1e-4)  # L1-normalised per sample and layer


def test_cut_search_finds_the_budget_edge_in_log_passes():
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    slices = {"a": slice(0, 400), "b": slice(400, 1000)}
    order = np.argsort(scores)
    rank = np.empty(1000, int)
    rank[order] = np.arange(1000)

    def evaluate(kept):  # accuracy stays 90 until the 600th least relevant unit goes
        dropped = rank[~kept]
        return 90.0 if (len(dropped) == 0 or dropped.max() < 600) else 50.0

    result = search_cut(scores, np.zeros(1000, bool), slices, evaluate, acc_drop=1.0, n_val=500, min_free=0.0)
    assert (~result.kept).sum() == 600 and result.kept_acc == 90.0
    assert result.evaluations <= 13  # ~log2(1000) + the unpruned pass


def test_cut_search_frees_more_units_for_min_free_only_within_budget():
    scores = np.arange(20, dtype=float)
    slices = {"a": slice(0, 10), "b": slice(10, 20)}

    def evaluate(kept):  # layer a may lose anything; layer b needs units 15..19
        return 90.0 if kept[15:20].all() else 10.0

    result = search_cut(scores, np.zeros(20, bool), slices, evaluate, 1.0, 100, min_free=0.8)
    assert not result.kept[:9].any() and result.kept[15:20].all()
    assert result.shortfall == {"b": 3}  # needed 8 free in b, the budget allowed 5


def test_on_few_images_the_tolerance_allows_losing_none():
    scores = np.arange(10, dtype=float)

    def evaluate(kept):  # dropping unit 4 or more costs one image of 150
        return 100.0 if kept[4:].all() else 100.0 - 100.0 / 150

    result = search_cut(scores, np.zeros(10, bool), {"a": slice(0, 10)}, evaluate, 0.5, 150, min_free=0.0)
    assert result.tolerance == 0.5 and result.kept_acc == 100.0 and not result.kept[:4].any() and result.kept[4:].all()


def test_chain_probabilities_follow_the_classifier_chain():
    p_r = np.array([[0.9, 0.5], [0.1, 0.2], [0.0, 0.0]])
    p_t = chain_probabilities(p_r)
    assert np.allclose(p_t[0], [0.9, 0.1 * 0.5, 0.1 * 0.5])
    assert np.allclose(p_t[1], [0.1, 0.9 * 0.2, 0.9 * 0.8])
    assert np.allclose(p_t[2], [0, 0, 1]) and np.allclose(p_t.sum(1), 1)
    assert chain_probabilities(np.zeros((4, 0))).tolist() == [[1.0]] * 4


def test_relevance_store_keeps_only_selected_columns_and_follows_growth():
    rows = np.zeros((5, 20), np.float32)  # 10 units: relevance columns 0-9, activation columns 10-19
    rows[:, [2, 7]] = [1.0, -3.0]
    rows[:, 10:] = np.arange(10)
    store = RelevanceStore()
    sizes = {"a": 5, "b": 5}
    kept = np.zeros(10, bool)
    kept[[1, 6]] = True
    store.add_task(0, rows, n_features=2, layer_sizes=sizes, kept_flat=kept)
    assert store.features[0].tolist() == [[0, 2], [1, 2]] and store.active[0].tolist() == [[0, 1], [1, 1]]
    assert store.rows[0][0].shape == (5, 4) and store.rows[0][0][0].tolist() == [1.0, -3.0, 1.0, 6.0]
    store.add_ood(0, 1, np.ones((4, 20), np.float32), sizes)
    X, y = store.training_set(0)
    assert X.shape == (9, 4) and y.tolist() == [1] * 5 + [0] * 4
    grown = {"a": 8, "b": 5}  # layer a grew by 3 units at its end: b's units move, features follow
    assert store.columns(0, grown).tolist() == [2, 10, 13 + 1, 13 + 9]
    assert select_features(rows[:, :10], 1).tolist() == [7]
    store.add_task(1, rows, n_features=1, layer_sizes=sizes)  # activation features off: relevance only
    assert store.active[1].shape == (0, 2) and store.rows[1][1].shape == (5, 1)
    again = RelevanceStore.from_arrays(store.to_arrays(), 2, sizes)
    assert all(np.array_equal(a, b) for a, b in zip(again.active, store.active))


@pytest.mark.parametrize("bad, message", [
    (dict(net="vgg19"), "net must be one of vgg, vgg11, lenet, resnet18, not 'vgg19'"),
    (dict(composite="Nope"), "composite must be one of"),
    (dict(acc_drop=-1), "acc_drop must be in [0, 100], not -1"),
    (dict(min_free=1.0), "min_free must be in [0, 1), not 1.0"),
    (dict(epochs=0), "epochs must be in [1, 10000], not 0"),
    (dict(epochs=2.5), "epochs must be a whole number"),
    (dict(grow="yes"), "grow must be true or false"),
    (dict(device="tpu"), "device must be one of auto, cpu, cuda, mps, not 'tpu'"),
])
def test_bad_settings_are_refused_by_check_params_with_the_allowed_range(bad, message, demo_tasks):
    learner = ReReLRP(**bad)  # scikit-learn's habit: the constructor only stores
    assert {k: getattr(learner, k) for k in bad} == bad
    with pytest.raises(ConfigError) as error:
        learner.check_params()
    assert message in str(error.value)
    with pytest.raises(ConfigError):
        learner.add_task(demo_tasks[0])
    assert learner.n_tasks == 0 and not hasattr(learner, "net_")


def test_unknown_settings_are_refused_at_construction_and_params_round_trip():
    with pytest.raises(ConfigError, match="unknown setting.*learning_rate"):
        ReReLRP(learning_rate=0.1)
    learner = ReReLRP(epochs=3)
    assert learner.get_params()["epochs"] == 3 and learner.set_params(epochs=4) is learner and learner.epochs == 4
    assert ReReLRP(**learner.get_params()).get_params() == learner.get_params()
    with pytest.raises(ConfigError, match="unknown setting"):
        learner.set_params(epoch=1)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            ReReLRP(device="cuda").check_params()


def test_using_the_model_before_any_task_says_so(demo_tasks):
    learner = ReReLRP()
    for use in (lambda: learner.predict(demo_tasks[0].test.images[:2]), lambda: learner.explain(demo_tasks[0].test.images[:1]),
                learner.export_state):
        with pytest.raises(ConfigError, match="no task learned yet"):
            use()


def test_task_with_one_class_is_refused(demo_tasks):
    from dataclasses import replace

    task = demo_tasks[0]
    single = replace(task, class_names=task.class_names[:1])
    with pytest.raises(ConfigError, match="at least 2"):
        ReReLRP(**FAST).add_task(single)


@pytest.mark.parametrize("arch", ["vgg", "lenet", "resnet18"])
def test_specialised_zplus_gives_zennits_relevance_bit_for_bit(arch, monkeypatch):
    """Our z+ for post-ReLU inputs (one pass, a one-operation stabiliser) and our hooks that skip each
    layer's own backward (RuleOnly) must equal zennit's stock EpsilonPlusFlat exactly."""
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    import rerelrp.lrp.relevance as relevance

    torch.manual_seed(0)
    net = build_net(arch, 28, head_sizes=[2, 3])
    net.train()
    net(torch.rand(16, 3, 28, 28))  # BatchNorm statistics that are not the identity
    net.eval()
    x, offsets, heads = torch.rand(4, 3, 28, 28), np.array([0, 2, 5]), torch.tensor([0, 1, 1, 0])
    with RelevanceReader(net) as reader:
        ours = reader(x, offsets, heads, heatmap=True)
    canon = [ResNetCanonizer()] if arch == "resnet18" else [SequentialMergeBatchNorm()]
    monkeypatch.setattr(relevance, "make_composite", lambda *a: EpsilonPlusFlat(canonizers=canon))
    with RelevanceReader(net) as reader:
        stock = reader(x, offsets, heads, heatmap=True)
    assert torch.equal(ours.units, stock.units) and torch.equal(ours.heatmap, stock.heatmap)
    assert torch.equal(ours.logits, stock.logits) and torch.equal(ours.activations, stock.activations)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch, size", [("lenet", 28), ("resnet18", 16)])
def test_other_backbones_learn_two_tasks_exactly(demo_tasks, arch, size, device):
    from dataclasses import replace

    few = [replace(t, train=t.train.subset(slice(0, 96))) for t in demo_tasks[:2]]  # ResNet-18 is slow on a CPU
    learner = ReReLRP(**FAST, net=arch, input_size=size, min_free=0.5, device=device)
    learner.add_task(few[0])
    first = learner.subnetwork_logits(demo_tasks[0].test.images, 0)
    learner.add_task(few[1])
    assert torch.equal(learner.subnetwork_logits(demo_tasks[0].test.images, 0), first)
    assert learner.predict(demo_tasks[1].test.images[:3]).p_task.shape == (3, 2)
    if arch == "resnet18":  # residual layers cannot grow: a full layer is reported, not grown
        learner.ledger_.kept = {k: np.ones_like(v) for k, v in learner.ledger_.kept.items()}
        learner.add_task(few[0])  # every layer full: reported, not grown
        assert learner.history_[-1].grown == {}
        warnings = learner.history_[-1].warnings
        full = [w for w in warnings if "only reuse frozen units" in w]  # besides, perhaps, "learned nothing"
        assert len(full) == len(learner.ledger_.layer_sizes) and len(warnings) - len(full) <= 1


def test_direct_forest_probabilities_equal_sklearns_bit_for_bit():
    from rerelrp.method.recognition import fit_recognizer, forest_proba

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 12)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=400) > 0).astype(int)
    forest = fit_recognizer(X, y, n_trees=50, seed=3)
    forest.n_jobs = 1  # sklearn sums trees in thread order with several jobs; one job is its deterministic order
    for n in (1, 7, 300):
        rows = rng.normal(size=(n, 12))
        assert np.array_equal(forest_proba(forest, rows), forest.predict_proba(rows))
