"""Make room: when the search leaves a layer short of ``min_free``, drop the shortfall and fine-tune the rest.

The search only removes units the trained network can do without. A small first task may spread
over every unit: dropping each layer's least relevant fifth without retraining can cost most of
its accuracy, on loss as much as on errors, so no criterion finds a cut that leaves room and
every layer had to grow. PackNet (Mallya & Lazebnik, CVPR 2018) prunes and then retrains the
weights it keeps for a few epochs, so that the task relearns to do without
the dropped units. Here the shortfall is dropped, the task's own (still trainable) weights are
fine-tuned with those units masked, and the result is judged like every cut: on the same images,
against the same threshold. Short of it, the weights go back bit for bit and the short layers
grow before the next task, as before. Frozen units of earlier tasks never change (the freezer).

Only where the cut was judged on too few images for its tolerance to allow losing a single one
(see :func:`room_needed`): there the search can drop only units that change no prediction at all. On
larger judged sets it already spends a real budget, and fine-tuning the shortfall away costs later
tasks the capacity growth would have given them (docs/method-notes.md, *Making room*).
"""
from __future__ import annotations

from dataclasses import replace

from rerelrp.method.pruning import most_relevant, shortfall_of, shortfall_units
from rerelrp.method.training import train


def room_needed(pruned):
    """Whether to try making room: a shortfall, on fewer than 100 / tolerance judged images (400 at 0.25)."""
    return bool(pruned.shortfall) and pruned.tolerance * pruned.n_images < 100.0


def make_room(net, pruned, scores, frozen, slices, min_free, tune, evaluate):
    """``pruned`` with its shortfall dropped if fine-tuning keeps the search's threshold; ``room`` says what happened.

    ``tune(kept)`` fine-tunes with only the ``kept`` units active and returns the optimiser steps it
    ran; ``evaluate(kept)`` is the search's judge (accuracy in % on the images it judges).
    """
    drop = shortfall_units(pruned.kept, scores, frozen, most_relevant(scores, slices), slices, min_free)
    if not len(drop):  # every short layer is down to its most relevant unit already
        return replace(pruned, room={"dropped": 0, "steps": 0, "acc": pruned.kept_acc, "accepted": False})
    saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
    kept = pruned.kept.copy()
    kept[drop] = False
    steps = tune(kept)
    acc = float(evaluate(kept))
    room = {"dropped": int(len(drop)), "steps": int(steps), "acc": acc, "accepted": acc >= pruned.threshold}
    if room["accepted"]:
        return replace(pruned, kept=kept, kept_acc=acc, shortfall=shortfall_of(kept, frozen, slices, min_free),
                       room=room)
    net.load_state_dict(saved)
    return replace(pruned, room=room)


def tune_without(net, freezer, source, labels, schedule, loss_fn, masks, generator, validate, report=None):
    """Train the freezer's trainable weights with only the units in ``masks`` active; returns the steps run.

    ``masks``: per layer a (1, units) mask of the units kept; ``validate`` should judge the same
    sub-network, so that the best epoch is the best without the dropped units.
    """
    steps = 0

    def masked(net, x, y, index):
        nonlocal steps
        steps += 1
        with net.subnetworks({k: v.expand(len(x), -1) for k, v in masks.items()}):
            return loss_fn(net, x, y, index)

    train(net, freezer.trainable(), source, labels, schedule, masked, generator, report, hooks=freezer,
          validate=validate)
    return steps
