"""One temperature for P_T: P_T^(1/tau), normalised, with tau fitted on validation images.

The chain's P_T is under-confident: the task is right more often than P_T says (docs/results.md,
"P_T calibration"). Temperature scaling (Guo et al., ICML 2017) fits one number by the negative
log-likelihood of the true task and never changes which task is the largest, so no accuracy moves.
Fitting it needs validation images of every learned task at once, which a replay-free learner
does not keep: the run that holds them for testing fits it after each task
(:func:`rerelrp.run.calibration.calibrate_p_task`), and learning the next task drops it.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

BOUNDS = (0.05, 20.0)  # a temperature outside these would say the fit failed, not that P_T needs it


def tempered(p_task, temperature):
    """``p_task`` (N, T) raised to 1 / ``temperature`` and normalised per row (1: unchanged)."""
    p_task = np.asarray(p_task, float)
    if temperature == 1.0 or p_task.shape[1] < 2:
        return p_task
    logits = np.log(np.clip(p_task, 1e-12, 1.0)) / temperature
    logits -= logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def fit_temperature(p_task, truth):
    """The temperature in :data:`BOUNDS` that minimises the NLL of task ``truth`` (N,) under ``p_task`` (N, T)."""
    p_task, truth = np.asarray(p_task, float), np.asarray(truth, int)
    if not len(truth):
        raise ValueError("no validation images to fit a temperature on")
    rows = np.arange(len(truth))

    def nll(tau):
        return -np.log(np.clip(tempered(p_task, tau)[rows, truth], 1e-12, 1.0)).mean()

    return float(minimize_scalar(nll, bounds=BOUNDS, method="bounded", options={"xatol": 1e-4}).x)


def check_temperature(value):
    """``value`` as a temperature, or a ValueError (a workspace may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not BOUNDS[0] <= value <= BOUNDS[1]:
        raise ValueError(f"the P_T temperature {value!r} is not a number in [{BOUNDS[0]}, {BOUNDS[1]}]")
    return float(value)
