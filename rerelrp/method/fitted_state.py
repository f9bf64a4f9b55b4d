"""A ReReLRP learner's fitted state rebuilt from :meth:`ReReLRP.export_state` output, every part checked.

A workspace (or anyone's dictionary) may hold anything: each part is checked against the others
(tasks, heads, layer sizes, tensors, kept sets, relevance rows, recognisers) before a model is
made of it, and a part that does not fit is a :class:`ConfigError` naming it.
"""
from __future__ import annotations

from dataclasses import dataclass

from rerelrp.errors import ConfigError
from rerelrp.method.recognition import RelevanceStore
from rerelrp.method.task_gaussians import TaskGaussians
from rerelrp.method.task_report import TaskReport
from rerelrp.method.temperature import check_temperature
from rerelrp.model.nets import build_net
from rerelrp.model.units import UnitLedger


@dataclass
class Fitted:
    net: object
    ledger: UnitLedger
    store: RelevanceStore | TaskGaussians
    recognizers: list
    tasks: list
    history: list
    temperature: float  # of P_T (rerelrp.method.temperature); 1 in a workspace saved before it existed


def rebuild(state, arch, input_size, recognizer):
    """The fitted parts of ``state`` for a learner of network ``arch`` (its ``input_size`` setting: 0 is auto)
    whose recognisers are ``recognizer`` ('gaussian': statistics, no estimators; 'forest': rows and forests)."""
    meta, arrays = state["meta"], state["arrays"]
    tasks = _tasks(meta)
    layer_sizes = _layer_sizes(meta)
    net = _network(meta, state["tensors"], arch, input_size, tasks, layer_sizes)
    ledger = _ledger(arrays, layer_sizes, len(tasks))
    stored = {k: v for k, v in arrays.items() if not k.startswith("kept/")}
    try:
        if recognizer == "gaussian":
            store = TaskGaussians.from_arrays(stored, len(tasks), layer_sizes, [len(t["classes"]) for t in tasks])
        else:
            store = RelevanceStore.from_arrays(stored, len(tasks), layer_sizes)
    except ValueError as exc:
        raise ConfigError(f"arrays: {exc}") from None
    history = [TaskReport.from_dict(h) for h in meta.get("history") or [] if isinstance(h, dict)]
    try:
        temperature = check_temperature(meta.get("p_task_temperature", 1.0))
    except ValueError as exc:
        raise ConfigError(f"meta: {exc}") from None
    forests = [] if recognizer == "gaussian" else _recognizers(state, store, len(tasks))
    if recognizer == "gaussian" and state.get("estimators"):
        raise ConfigError("estimators: Gaussian recognisers keep no fitted estimators, but some are given")
    return Fitted(net, ledger, store, forests, list(tasks), history, temperature)


def _tasks(meta):
    tasks = meta.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(
            isinstance(t, dict) and isinstance(t.get("classes"), list) and isinstance(t.get("name"), str) for t in tasks):
        raise ConfigError("meta: no valid task list")
    return tasks


def _layer_sizes(meta):
    sizes = meta.get("layer_sizes")
    if not (isinstance(sizes, list) and all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], str)
                                            and isinstance(s[1], int) and s[1] > 0 for s in sizes)):
        raise ConfigError("meta: no valid layer sizes")
    return dict(sizes)


def _network(meta, tensors, arch, input_size, tasks, layer_sizes):
    head_sizes = [len(t["classes"]) for t in tasks]
    if meta.get("head_sizes") != head_sizes or meta.get("arch") != arch:
        raise ConfigError("meta: the heads or the network do not match the tasks and settings")
    size = meta.get("input_size", input_size)  # workspaces of format 2 ran at their setting
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 512:
        raise ConfigError(f"meta: input size {size!r} is not a whole number of pixels in [8, 512]")
    net = build_net(arch, size, head_sizes)
    if net.layer_sizes != layer_sizes:
        net = build_net(arch, size, head_sizes, layer_sizes)
    if list(net.layer_sizes.items()) != list(layer_sizes.items()):
        raise ConfigError(f"meta: layer sizes {layer_sizes} do not fit a {arch} network")
    try:
        net.set_input_blocks(meta.get("input_blocks") or {})
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"meta: {exc}") from None
    expected = net.state_dict()
    if set(tensors) != set(expected):
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ConfigError(f"tensors: do not match the network: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in expected.items():
        if tensors[key].shape != value.shape or tensors[key].dtype != value.dtype:
            raise ConfigError(f"tensors: {key} has shape {tuple(tensors[key].shape)} {tensors[key].dtype}, "
                              f"expected {tuple(value.shape)} {value.dtype}")
    net.load_state_dict(tensors, strict=True)
    return net


def _ledger(arrays, layer_sizes, n_tasks):
    ledger = UnitLedger(layer_sizes)
    for name, n in layer_sizes.items():
        kept = arrays.get(f"kept/{name}")
        if kept is None or kept.dtype != bool or kept.shape != (n_tasks, n):
            raise ConfigError(f"arrays: kept/{name} is missing or not bool ({n_tasks}, {n})")
        ledger.kept[name] = kept.copy()
    return ledger


def _recognizers(state, store, n_tasks):
    estimators = state.get("estimators") or {}
    names = [f"recognizer-{m:03d}" for m in range(n_tasks - 1)]
    if sorted(estimators) != names:
        raise ConfigError(f"estimators: {len(estimators)} recogniser(s) given; {n_tasks} tasks need {n_tasks - 1}")
    for m, name in enumerate(names):
        if estimators[name].n_features_in_ != store.n_columns(m):
            raise ConfigError(f"estimators: {name} reads {estimators[name].n_features_in_} features, the store "
                              f"keeps {store.n_columns(m)}")
    return [estimators[name] for name in names]
