"""The scikit-learn contract of every learner: parameters round-trip, no fitted state before the first
task, a clear error when used unfitted, and each method takes only the settings that apply to it."""
import numpy as np
import pytest

from conftest import FAST
from rerelrp import settings
from rerelrp.baselines import BASELINES
from rerelrp.errors import ConfigError
from rerelrp.method.learner import ReReLRP
from rerelrp.method.task_report import TaskReport
from rerelrp.method.training import Schedule

LEARNERS = {"rerelrp": ReReLRP, **BASELINES}


def _changed(defaults):
    """A value other than the default for every parameter (kept valid, so check_params passes)."""
    out = {}
    for name, value in defaults.items():
        if isinstance(value, bool):
            out[name] = not value
        elif name == "input_size":
            out[name] = 32
        elif name in ("net", "composite", "device"):
            out[name] = value
        elif name == "recognizer":
            out[name] = "forest"
        elif isinstance(value, int):
            out[name] = value + 1
        elif isinstance(value, float):
            out[name] = value / 2 if value else 0.1
    return out


@pytest.mark.parametrize("method", LEARNERS)
def test_get_params_round_trips_every_constructor_argument(method):
    cls = LEARNERS[method]
    params = _changed(cls.param_defaults())
    learner = cls(**params).check_params()
    assert learner.get_params() == params
    clone = cls(**learner.get_params())
    assert clone.get_params() == learner.get_params() and clone is not learner
    assert set(cls.param_defaults()) == set(settings.defaults(method)) | set(cls.extra_params)


@pytest.mark.parametrize("method", LEARNERS)
def test_no_fitted_state_before_the_first_task(method):
    learner = LEARNERS[method]()
    assert not [k for k in vars(learner) if k.endswith("_")], "fitted attributes exist before add_task"
    assert learner.n_tasks == 0
    with pytest.raises(ConfigError, match="no task learned yet"):
        learner.predict(np.zeros((1, 8, 8, 1), np.uint8))


@pytest.mark.parametrize("method", BASELINES)
def test_a_baseline_refuses_rerelrp_only_settings(method):
    with pytest.raises(ConfigError, match="unknown setting acc_drop for"):
        BASELINES[method](acc_drop=1.0)


def test_method_parameters_are_validated():
    with pytest.raises(ConfigError, match="exemplars_per_class"):
        BASELINES["replay"](exemplars_per_class=0).check_params()
    with pytest.raises(ConfigError, match="ewc_alpha"):
        BASELINES["ewc"](ewc_alpha=2.0).check_params()
    with pytest.raises(ConfigError, match="lwf_temperature"):
        BASELINES["lwf"](lwf_temperature=0).check_params()


def test_a_learned_task_reports_the_settings_and_schedule_it_ran_with(demo_tasks):
    learner = ReReLRP(**{**FAST, "epochs": 2, "min_steps": 30})
    learner.add_task(demo_tasks[0])
    report = learner.history_[0]
    assert isinstance(report, TaskReport) and report.settings == learner.get_params()
    plan = Schedule.of(learner.get_params()).plan(len(demo_tasks[0].train))
    assert report.schedule == plan and plan["steps"] >= 30 and len(report.train_curve) == plan["epochs"]
    learner.set_params(epochs=1, min_steps=0).add_task(demo_tasks[1])  # the next task with other settings
    first, second = learner.history_
    assert (first.settings["epochs"], second.settings["epochs"]) == (2, 1)
    assert second.schedule["epochs"] == 1 and first.schedule["epochs"] >= 2
    state = learner.export_state()
    again = ReReLRP.from_state(state)
    assert again.history_ == learner.history_  # saved and read back per task
    assert TaskReport.from_dict({**first.to_dict(), "unknown": 1}) == first  # older or newer records still read
