"""The state an interactive session keeps between requests, and the rules that keep its model consistent.

:class:`AppState` is everything the app holds (data sets, the task plan, the
:class:`~rerelrp.run.runner.SequenceRun`, the current :class:`~rerelrp.run.jobs.Job`):

* training works on a *copy* of the run; the copy replaces the published run only when a task
  has been learned and tested completely. A stop or an error leaves the published run exactly
  as it was before that task (the learner also rolls itself back), and pages that read the
  model (explain, recognise, capacity) never see a half-trained network;
* one job at a time, and one state for every browser tab (one model, one GPU; a reload finds the
  model again): each change is logged with the tab that made it (:class:`~rerelrp.app.activity.Activity`),
  so that a tab can say what another did, and a running job says which tab started it;
* uses of the published model are serialised by a lock (LRP installs hooks on the network);
* every learned task is saved to the session's workspace before it is published, so a closed
  tab, a crash or a restart loses nothing that was shown.

Nothing here imports Streamlit; the app keeps one :class:`AppState` in ``st.cache_resource``.
"""
from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from pathlib import Path

import rerelrp.settings as learner_settings
from rerelrp.app.activity import Activity
from rerelrp.app.session_workspace import SessionWorkspace
from rerelrp.data import build_sequence, load_dataset, medical_demo_paths
from rerelrp.errors import ConfigError, RerelrpError, StopRequested
from rerelrp.fileio import write_json_atomic
from rerelrp.method.learner import ReReLRP
from rerelrp.run.compare import compare, parse_methods, parse_seeds, plan
from rerelrp.run.jobs import Job
from rerelrp.run.method_run import ABLATION, trained_records
from rerelrp.run.runner import SequenceRun
from rerelrp.store.workspace import (
    DEFAULT_ROOT,
    is_workspace,
)


class AppState(SessionWorkspace):
    """What an interactive session holds between requests; the app keeps one per process.

    ``datasets``: loaded :class:`~rerelrp.data.ImageDataset` by name. ``run``: the published
    :class:`~rerelrp.run.runner.SequenceRun` (learner, planned tasks, metrics). ``settings``: the
    learner settings the next task will use. ``job``: the current or last background job.
    ``version`` increases whenever the published model changes (a cache key for results).
    """

    def __init__(self, settings=None, demo="medical", workspace_root=None):

        self.lock = threading.RLock()  # guards state changes
        self.model_lock = threading.Lock()  # serialises predict / explain on the published learner
        self.datasets = OrderedDict()
        self.settings = {**learner_settings.defaults(), **(settings or {})}
        self.run = None
        self.job = None
        self.version = 0  # the published model changed (cache key of results)
        self.generation = 0  # the run was replaced by a new one (reset)
        self.results = OrderedDict()  # small cache of explanations / predictions by key
        self.created = time.time()
        self.workspace_root = Path(workspace_root or DEFAULT_ROOT)
        self.workspace = self._fresh_workspace()
        self.data_note = None  # why the learned tasks' images are not available (an opened workspace)
        self.workspace_meta = None  # what the opened workspace's learner.json says (for reloading its data)
        self.comparison = None  # the last finished comparison of methods (rerelrp.run.compare) on the planned tasks
        self.compare_total = 0  # runs the current or last comparison job plans
        self.job_kind = None  # "train" or "compare": what the current or last job does
        self.activity = Activity()  # who changed what (tabs share this state)
        self._new_run([])
        if demo:
            self.load_demo(demo)

    # ------------------------------------------------------------ data and plan
    def load_demo(self, kind="medical"):
        """Load a bundled demo and plan it: ``medical`` (chest X-ray, breast ultrasound, blood cells,
        one task each) or ``digits`` (5 tasks of 2 digits). Returns the data sets."""

        if kind not in ("medical", "digits"):
            raise ConfigError(f"unknown demo {kind!r}: medical or digits")
        self._check_plannable()  # before anything is added: a demo is loaded whole or not at all
        datasets = [load_dataset(path) for path in medical_demo_paths()] if kind == "medical" else [load_dataset("demo")]
        with self.activity.action(f"loaded the {kind} demo and planned its tasks"):
            for ds in datasets:
                self.add_dataset(ds)
            self.set_plan(build_sequence(datasets, None if kind == "medical" else 5))
        return datasets

    def add_dataset(self, ds):
        """Keep ``ds`` under a unique name (a second upload of the same name gets a suffix)."""
        with self.lock:
            name, k = ds.name, 2
            while name in self.datasets and self.datasets[name] is not ds:
                name, k = f"{ds.name} ({k})", k + 1
            if name != ds.name:
                ds.name = name
            if self.datasets.get(name) is not ds:
                self.activity.record(f"loaded the data set {name}")
            self.datasets[name] = ds
            return name

    def remove_dataset(self, name):
        with self.lock:
            if self.datasets.pop(name, None) is not None:
                self.activity.record(f"removed the data set {name}")

    @property
    def learner(self):
        return self.run.learner

    @property
    def tasks(self):
        return self.run.tasks

    @property
    def n_learned(self):
        return self.run.n_learned

    @property
    def pending(self):
        return self.run.tasks[self.run.n_learned :]

    def set_plan(self, tasks, append=False):
        """Replace (or extend) the tasks not learned yet; learned tasks always stay first."""
        self._check_plannable()
        with self.lock:
            learned = self.run.tasks[: self.n_learned]
            rest = (self.pending if append else []) + list(tasks)
            self.run.tasks = learned + rest
            self.activity.record(f"{'added to' if append else 'replaced'} the task plan ({len(self.pending)} planned)")
            return self.run.tasks

    def _check_plannable(self):
        self._check_idle("change the task plan")
        if len(self.run.tasks) < self.n_learned:
            raise ConfigError("the learned tasks' data are not loaded (an opened workspace): load them on the Data "
                              "page first, so that new tasks follow the learned ones")

    def drop_pending(self, index):
        """Remove planned (not learned) task number ``index`` of the whole sequence."""
        self._check_idle("change the task plan")
        with self.lock:
            if index < self.n_learned:
                raise ConfigError(f"task {index} is learned already; only planned tasks can be removed")
            name = self.run.tasks.pop(index).name
            self.activity.record(f"removed planned task {index} ({name})")

    # ------------------------------------------------------------ settings and model
    def _new_run(self, tasks):

        self.run = SequenceRun(ReReLRP(**self.settings), tasks)

    def locked_settings(self):
        """Settings fixed by the first task (the network is built then)."""
        if not self.n_learned:
            return ()
        return tuple(name for name, s in learner_settings.SETTINGS.items() if s.fixed)

    def update_settings(self, **values):
        """Validate and store learner settings for the next task; first-task-only ones lock after it."""
        self._check_idle("change settings")
        with self.lock:
            locked = [k for k in values if k in self.locked_settings() and values[k] != self.settings.get(k)]
            if locked:
                raise ConfigError(f"{', '.join(locked)} cannot change after the first task: the network is built; "
                                  "start a new run to change them")
            checked = learner_settings.check(values)
            changed = sorted(k for k, v in checked.items() if self.settings.get(k) != v)
            self.settings = {**self.settings, **checked}
            if changed:
                self.activity.record(f"changed the settings {', '.join(changed)}")
            if self.n_learned == 0:  # nothing trained: a fresh learner with these settings
                self._new_run(self.run.tasks)
            return self.settings

    def reset(self, keep_plan=True):
        """Forget the trained model (not the data): a new run over the same plan, saved to a new workspace."""
        self._check_idle("start a new run")
        with self.lock:
            self._new_run(self.run.tasks if keep_plan else [])
            self.workspace = self._fresh_workspace()
            self.data_note = None
            self.generation += 1
            self.version += 1
            self.results.clear()
            self.activity.record("started a new run (the trained model is kept in its workspace)")

    def describe_device(self):
        try:
            return self.learner.describe_device()
        except RerelrpError as exc:
            return f"unavailable ({exc})"

    # ------------------------------------------------------------ training jobs
    @property
    def busy(self):
        return self.job is not None and self.job.running

    def _check_idle(self, what):
        if self.busy:
            job = self.job
            started = time.strftime("%H:%M:%S", time.localtime(job.started_at or time.time()))
            raise ConfigError(f"cannot {what} while {job.name} is running (started by {self.activity.who(job.owner)} "
                              f"at {started}); wait for it or press Stop")

    def _working_copy(self):
        """A run whose learner and metrics are copies; the planned tasks (images) are shared."""

        with self.lock, self.model_lock:
            learner = copy.deepcopy(self.run.learner)
            per_task = {k: v for k, v in self.settings.items() if not learner_settings.SETTINGS[k].fixed}
            learner.set_params(**per_task).check_params()
            return SequenceRun(learner, list(self.run.tasks), copy.deepcopy(self.run.metrics), workspace=self.workspace)

    def _publish(self, work, generation):
        """Make ``work`` the published run, unless the run was reset since the job started."""
        with self.lock:
            if self.generation != generation:
                return False
            work.tasks = list(self.run.tasks)
            with self.model_lock:
                self.run = work
            self.version += 1
            self.results.clear()
            return True

    def start_training(self, n_tasks=1):
        """Learn the next ``n_tasks`` planned tasks (None: all remaining) in a background job.

        Each task trains on a copy of the published run; the copy is published when the task is
        learned and tested. Stop ends the job at the next batch; tasks finished before stay.
        """
        with self.lock:
            self._check_idle("start another job")
            if self.run.done:
                raise ConfigError("every planned task is learned; plan another task on the Data page first")
            total = len(self.pending) if n_tasks is None else min(n_tasks, len(self.pending))
            learner_settings.check(self.settings)  # bad settings fail now, in the caller's thread
            generation = self.generation

            def target(callback, stop):
                summaries = []
                for _ in range(total):
                    work = self._working_copy()
                    i = work.n_learned
                    job.note(f"task {i} ({work.tasks[i].name}): started")
                    summary = work.step(callback=callback, stop=stop)  # saved to the workspace before it returns
                    if not self._publish(work, generation):
                        raise StopRequested("the run was reset while training; the result was dropped")
                    summaries.append(summary)
                    job.add_result(summary)
                    job.note(f"task {i} ({summary.name}): learned in {sum(summary.seconds.values()):.1f} s")
                    if stop.is_set():
                        break
                return summaries

            job = Job(target, name="training of the next task" if total == 1 else f"training of {total} tasks",
                      owner=self.activity.actor)
            self.job, self.job_kind = job, "train"
            job.start()
            self.activity.record(f"started {job.name}")
            return job

    def start_compare(self, methods, seeds, exemplars_per_class=20):
        """Run ReReLRP and baselines on the planned tasks for each seed in a background job.

        The published model is not touched: every run trains its own learner with the current
        settings, except the ReReLRP run the published model already is (see :meth:`_reusable`),
        which is read from it. Each finished run is a job result; the comparison becomes :attr:`comparison` (and
        the workspace's ``compare.json``, which its reports show) when every run is done.
        """

        with self.lock:
            self._check_idle("start a comparison")
            methods, seeds = parse_methods(methods), parse_seeds(seeds)
            if len(self.tasks) < 2:
                raise ConfigError("plan at least two tasks on the Data page: a comparison is about forgetting")
            tasks, params = list(self.tasks), learner_settings.check(self.settings)
            total = len(plan(methods, seeds))
            reused = self._reusable(methods, seeds, params)

            def target(callback, stop):
                def on_task(method, seed, learned):
                    if learned < len(tasks):
                        job.note(f"{method} seed {seed}: task {learned} of {len(tasks)}")

                try:
                    reuse = []
                    if reused:
                        with self.model_lock:
                            reuse = trained_records(self.learner, self.run.metrics, tasks, ABLATION in methods)
                    result = compare(lambda seed: tasks, methods, seeds, params, exemplars_per_class,
                                     callback=callback, stop=stop, on_run=job.add_result, on_task=on_task, reuse=reuse)
                except StopRequested:  # the finished runs are kept, marked as a partial comparison
                    self._keep_comparison({"methods": methods, "seeds": seeds, "tasks": [t.name for t in tasks],
                                           "settings": params, "exemplars_per_class": exemplars_per_class,
                                           "runs": job.snapshot().results, "stopped": True})
                    raise
                self._keep_comparison(result)
                return result

            job = Job(target, name=f"a comparison ({total} runs)", owner=self.activity.actor)
            self.job, self.job_kind, self.compare_total = job, "compare", total
            job.start()
            self.activity.record(f"started {job.name}")
            return job

    def _reusable(self, methods, seeds, params):
        """Whether the published model is the ReReLRP run a comparison asks for: every planned task learned,
        each with the comparison's settings and one of its seeds (then it is read, not trained again)."""
        learner = self.learner
        if "rerelrp" not in methods or not self.n_learned or self.n_learned != len(self.tasks) \
                or learner.seed not in seeds:
            return False
        wanted = {**learner_settings.for_method(params, "rerelrp"), "seed": learner.seed}
        return all(report.settings == wanted for report in learner.history_)

    def _keep_comparison(self, result):

        with self.lock:
            self.comparison = result
            if is_workspace(self.workspace):
                write_json_atomic(self.workspace / "compare.json", result)

    def stop_training(self):
        if self.job is not None and self.job.running:
            self.job.stop()
            self.activity.record(f"stopped {self.job.name}")

    # ------------------------------------------------------------ using the model
    def cached(self, key, compute, max_items=64):
        """``compute()`` once per ``key`` and model version; LRU-bounded."""
        full = (self.version, *key) if isinstance(key, tuple) else (self.version, key)
        with self.lock:
            if full in self.results:
                self.results.move_to_end(full)
                return self.results[full]
        with self.model_lock:
            value = compute()
        with self.lock:
            self.results[full] = value
            while len(self.results) > max_items:
                self.results.popitem(last=False)
        return value
