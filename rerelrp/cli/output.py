"""What the command line prints while it works: progress bars per task and phase, and figures with their intervals."""
from __future__ import annotations

import sys

from tqdm import tqdm

from rerelrp.run.clinical import format_accuracy


class PhaseBars:
    """One tqdm bar per task and phase, replaced when the phase changes."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.bar = None
        self.key = None

    def __call__(self, event):
        if not self.enabled:
            return
        key = (event.task, event.phase)
        if key != self.key:
            self.close()
            self.key = key
            self.bar = tqdm(total=event.total, desc=f"task {event.task} {event.phase:<10}", leave=False, file=sys.stderr)
        self.bar.total = event.total
        self.bar.n = event.step
        self.bar.set_postfix_str(event.message, refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def print_task_figures(metrics):
    """Each learned task's TAw with its 95 % interval and number of test images (after the latest task)."""
    latest = metrics.latest
    for j, task in enumerate(metrics.tasks):
        figure = format_accuracy(metrics.acc_taw[-1][j], latest["taw_ci95"][j], latest["n_test"][j])
        print(f"    task {j} {task['name']}: TAw {figure}")


def print_final(metrics, path):
    """The final TAg and TAw with their 95 % intervals and number of test images, and forgetting."""
    final = metrics.final()
    if not final:
        return
    n = sum(metrics.latest.get("n_test", []))
    print(f"final: TAg {format_accuracy(final['tag'], final.get('tag_ci95'), n)}\n"
          f"       TAw {format_accuracy(final['taw'], final.get('taw_ci95'), n)}\n"
          f"       forgetting TAg {final['forgetting_tag']:.2f}  TAw {final['forgetting_taw']:.2f}  -> {path}")
    record = metrics.calibration[-1] if metrics.calibration else None
    if record and metrics.p_task_ece[-1] is not None:
        print(f"       P_T calibrated (temperature {record['temperature']:.2f}, fitted on {record['n_val']} validation "
              f"images): test ECE {metrics.p_task_ece[-1]:.3f}")
