"""How long the next task will train, said before it starts: the schedule that will run and a measured step.

The Train page shows this next to Epochs, so that a user who sets 2 epochs sees that the step
floor makes it 29 and what that costs before pressing the button. A task learned earlier in
the run gives the best measurement (its training seconds per step, on this machine, with
validation included); before the first task a few optimiser steps of a fresh network on blank
images are timed.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from rerelrp.device import resolve_device
from rerelrp.method.training import Schedule
from rerelrp.model.nets import build_net

TIMED_STEPS = 3


def measure_step_seconds(params, n_classes=2):
    """Seconds per optimiser step of a fresh ``params['net']`` at ``params['input_size']`` (one warm-up step)."""
    device = resolve_device(params["device"])
    net = build_net(params["net"], params["input_size"], [n_classes]).to(device).train()
    x = torch.zeros((params["batch_size"], 3, params["input_size"], params["input_size"]), device=device)
    y = torch.zeros(params["batch_size"], dtype=torch.long, device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=params["lr"], momentum=params["momentum"])
    seconds = []
    for _ in range(TIMED_STEPS + 1):
        clock = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - clock)
    return min(seconds[1:])


def training_plan(params, n_train, history=(), step_seconds=None):
    """What training a task of ``n_train`` images will run, and about how long it takes.

    Returns the schedule's plan (:meth:`Schedule.plan`) plus ``seconds_per_step``, ``estimate_s``
    and ``measured_on`` (the earlier task it came from, or "a timed step"). ``history`` holds the
    run's task reports; ``step_seconds`` a measurement of :func:`measure_step_seconds`.
    """
    plan = Schedule.of(params).plan(n_train)
    timed = [h for h in history if h.schedule.get("steps") and h.settings.get("batch_size") == params["batch_size"]]
    if timed:
        last = timed[-1]
        per_step, source = last.seconds.get("train", 0.0) / last.schedule["steps"], f"task {last.task}"
    elif step_seconds is not None:
        per_step, source = float(step_seconds), "a timed step"
    else:
        return {**plan, "seconds_per_step": None, "estimate_s": None, "measured_on": None}
    return {**plan, "seconds_per_step": per_step, "estimate_s": per_step * plan["steps"], "measured_on": source}


def describe_plan(plan):
    """One sentence for the Train page: what will run and how long training alone should take."""
    text = f"{plan['epochs']} epoch(s) × {plan['steps_per_epoch']} steps = {plan['steps']} optimiser steps"
    if plan["epochs"] > plan["epochs_set"]:
        text += (f" (Epochs is {plan['epochs_set']}; the floor of {plan['min_steps']} steps adds "
                 f"{plan['epochs'] - plan['epochs_set']}: lower min_steps to train less)")
    if plan["estimate_s"] is not None:
        text += (f"; training about {_duration(plan['estimate_s'])} at {plan['seconds_per_step'] * 1000:.0f} ms per step "
                 f"(measured on {plan['measured_on']}), plus relevance, pruning, recognisers and testing")
    return text


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
