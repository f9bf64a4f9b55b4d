"""The methods ReReLRP is compared with, on its backbone, data, training loop, seeds and evaluation.

``finetune`` and ``joint`` are the lower and upper reference bounds; ``ewc`` and ``lwf`` protect old
tasks with a regulariser; ``replay`` and ``icarl`` keep exemplar images (``exemplars_per_class``,
20 by default as in LifeLonger). Each is written from its paper (cited in its class) rather than
taken from Avalanche: Avalanche's strategies bring their own training loop, so a comparison would
measure the loop as much as the method (see docs/baselines.md).
"""
from rerelrp.baselines.learner import BaselineLearner, Finetune, Joint
from rerelrp.baselines.regularization import EWC, LwF
from rerelrp.baselines.rehearsal import ICaRL, Replay
from rerelrp.errors import ConfigError

BASELINES = {cls.method: cls for cls in (Finetune, Joint, EWC, LwF, Replay, ICaRL)}


def make_baseline(method, **params):
    """The baseline learner called ``method`` with ``params`` (the settings that apply to it and its own)."""
    if method not in BASELINES:
        raise ConfigError(f"unknown baseline '{method}'; valid: {', '.join(BASELINES)}")
    return BASELINES[method](**params)


__all__ = ["BASELINES", "BaselineLearner", "EWC", "Finetune", "ICaRL", "Joint", "LwF", "Replay", "make_baseline"]
