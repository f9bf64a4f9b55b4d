"""Where the runs of a comparison run: in this process, in worker processes on this machine, or on a
Dask cluster.

``rerelrp compare --jobs N --threads T`` sends each (method, seed) run to one of N worker processes
(joblib's loky process pool) with T torch threads each; ``--cluster tcp://HOST:PORT`` sends the same
runs to a Dask distributed scheduler (``pip install 'rerelrp[cluster]'``). Every run is independent
and seeded, so where it runs changes nothing but the wall time, provided it runs with the same
number of torch threads (torch's sums, and so the last bits of every figure, depend on it):
``--jobs 1 --threads T`` sets the same count in this process.

Workers load the data themselves from a :class:`TaskRecipe` (sources, task count, data root, DICOM
grouping): only the recipe and the settings travel to a worker, never images, and a run sends back
nothing but its record(s). Progress: each task a run has learned (``on_task``) and each finished run.
Stop: runs not started are cancelled and running ones stop at their next batch (worker processes
share an event with this process; Dask workers look at a Dask ``Event`` at most every
:data:`REMOTE_STOP_POLL` seconds), the finished runs are kept, then :class:`StopRequested` is raised.
"""
from __future__ import annotations

import importlib
import os
import queue
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from rerelrp.errors import ConfigError, RerelrpError, StopRequested
from rerelrp.run.method_run import TaskRecipe, run_method

CLUSTER_INSTALL = "pip install 'rerelrp[cluster]'"
POLL_SECONDS = 0.2  # how often the waiting parent looks at the caller's stop flag
REMOTE_STOP_POLL = 0.5  # how often a run on a Dask worker asks the scheduler whether Stop was pressed
CONNECT_TIMEOUT = "20s"


@dataclass(frozen=True)
class Run:
    """One run of a comparison, as a worker receives it (never any images)."""

    load_tasks: object  # a TaskRecipe, or any picklable ``seed -> tasks`` (then what it holds travels too)
    method: str
    seed: int
    also_ablation: bool
    params: dict
    exemplars_per_class: int
    threads: int | None
    version: str


# ---------------------------------------------------------------- one process, as before
def check(jobs=1, threads=None, cluster=None):
    """``(jobs, threads, cluster)`` checked; a clear :class:`ConfigError` otherwise."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a whole number ≥ 1, not {jobs!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"--threads must be a whole number ≥ 1, not {threads!r}")
    if cluster is not None:
        if not str(cluster).strip():
            raise ConfigError("--cluster needs the scheduler's address, e.g. tcp://10.0.0.5:8786")
        if jobs != 1:
            raise ConfigError("give either --jobs (worker processes on this machine) or --cluster (a Dask scheduler), "
                              "not both: a cluster runs as many runs at once as it has worker threads")
    return jobs, threads, cluster


@contextmanager
def torch_threads(threads):
    """``torch.set_num_threads(threads)`` (and as many threads for scikit-learn's joblib pools) while
    inside; ``None`` leaves everything as it is."""
    if threads is None:
        yield
        return
    import torch

    before, env = torch.get_num_threads(), os.environ.get("LOKY_MAX_CPU_COUNT")
    torch.set_num_threads(threads)
    os.environ["LOKY_MAX_CPU_COUNT"] = str(threads)  # the recognisers' forests (n_jobs=-1): no more than T threads
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("LOKY_MAX_CPU_COUNT", None)
        else:
            os.environ["LOKY_MAX_CPU_COUNT"] = env


def _in_process(load_tasks, runs, params, exemplars_per_class, threads, callback, stop, on_task):

    loaded = {}
    with torch_threads(threads):
        for method, seed, also in runs:
            if seed not in loaded:  # the runs come seed by seed: one sequence in memory at a time
                loaded.clear()
                loaded[seed] = load_tasks(seed)
            tasks = loaded[seed]
            records = run_method(method, tasks, params, seed, exemplars_per_class, also, callback, stop,
                                 on_task=(lambda i, m=method, s=seed: on_task(m, s, i)) if on_task else None)
            yield records, [t.name for t in tasks]


def fan_out(load_tasks, runs, params, exemplars_per_class=20, jobs=1, threads=None, cluster=None, callback=None,
            stop=None, on_task=None):
    """Do ``runs`` (``[(method, seed, also_ablation)]``, see :func:`rerelrp.run.compare.plan`) and yield
    ``(records, task_names)`` for each as it finishes: in this process, in order, with ``jobs=1``;
    in ``jobs`` worker processes, or on the Dask scheduler at ``cluster``, in the order they finish.

    ``callback`` (phase progress) reaches the in-process runs only; ``on_task(method, seed, k)``
    and ``stop`` (anything with ``is_set()``) work everywhere.
    """
    jobs, threads, cluster = check(jobs, threads, cluster)
    runs = list(runs)
    if cluster is None and jobs == 1:
        yield from _in_process(load_tasks, runs, params, exemplars_per_class, threads, callback, stop, on_task)
        return
    if stop is not None and stop.is_set():
        raise StopRequested("stopped on request before any run started")
    from rerelrp import __version__

    if cluster is None:
        if threads is None:  # the cores shared out; --threads T gives the figures of --jobs 1 --threads T
            from joblib import cpu_count

            threads = max(1, cpu_count() // jobs)
        pool = _ProcessPool(min(jobs, len(runs)) or 1, threads)
    else:
        pool = _DaskPool(str(cluster).strip())
    work = [Run(load_tasks, m, s, a, dict(params), exemplars_per_class, threads, __version__) for m, s, a in runs]
    clean = False
    try:
        yield from _gather(pool, work, stop, on_task)
        clean = True
    finally:
        pool.close(clean)


def _gather(pool, work, stop, on_task):
    """Submit every run, then yield each outcome as it arrives; Stop and failures end the others."""
    inbox = pool.inbox
    futures = {}
    for run in work:
        key = (run.method, run.seed)
        futures[key] = future = pool.submit(run)
        future.add_done_callback(lambda f, key=key: inbox.put(("done", key, f)))
    remaining, failure, stopping, finished = set(futures), None, False, 0

    def end_the_rest():
        pool.signal_stop()
        for key in remaining:
            futures[key].cancel()

    while remaining:
        try:
            item = inbox.get(timeout=POLL_SECONDS)
        except queue.Empty:
            item = None
        if item is not None and item[0] == "task":
            _, method, seed, learned = item
            if on_task and (method, seed) in remaining and not (stopping or failure):
                on_task(method, seed, learned)
        elif item is not None:
            _, key, future = item
            remaining.discard(key)
            outcome, error = _outcome(future)
            if outcome is not None:
                finished += 1
                yield outcome["records"], outcome["tasks"]
            elif isinstance(error, StopRequested) and not stopping:  # a Stop seen by a worker first
                stopping = True
                end_the_rest()
            elif error is not None and failure is None:
                failure = error
                end_the_rest()
        if not stopping and failure is None and remaining and stop is not None and stop.is_set():
            stopping = True
            end_the_rest()
    if failure is not None:
        raise failure
    if stopping:
        raise StopRequested(f"stopped on request after {finished} of {len(work)} run(s); the finished ones are kept, "
                            "the others were cancelled or stopped at their next batch")


def _outcome(future):
    """``(outcome, None)`` of a finished run, ``(None, error)`` of a failed one, ``(None, None)`` if cancelled."""
    if future.cancelled():
        return None, None
    try:
        outcome = future.result()
    except Exception as exc:  # noqa: BLE001 - a bug or a lost worker: raised in the caller once the others ended
        if isinstance(exc, ModuleNotFoundError) and "rerelrp" in str(exc):
            return None, ConfigError(f"a worker cannot import rerelrp ({exc}): install the same rerelrp version "
                                     "on every worker (docs/cluster.md)")
        return (None, None) if future.cancelled() else (None, exc)
    if "error" in outcome:
        return None, _revive(outcome["error"])
    return outcome, None


# ---------------------------------------------------------------- inside a worker
_WORKER_TASKS = {}  # the last sequence this worker loaded: (recipe, seed) -> tasks
_WORKER_LOCK = threading.Lock()


def _tasks_of(load_tasks, seed):
    if not isinstance(load_tasks, TaskRecipe):
        return load_tasks(seed)
    key = (load_tasks, seed)
    with _WORKER_LOCK:
        if key not in _WORKER_TASKS:
            _WORKER_TASKS.clear()
            _WORKER_TASKS[key] = load_tasks(seed)
        return _WORKER_TASKS[key]


def _execute(run, stop, report):
    """One run where it lands: ``{"records", "tasks"}``, or ``{"error"}`` carrying a rerelrp error
    (whose own class may not survive pickling)."""
    from rerelrp import __version__

    try:
        if run.version != __version__:
            raise ConfigError(f"this worker has rerelrp {__version__}, the machine that asked for the run has "
                              f"{run.version}: install the same version on every worker (docs/cluster.md)")
        if stop is not None and stop.is_set():
            raise StopRequested("stopped on request before this run started")

        with torch_threads(run.threads):
            tasks = _tasks_of(run.load_tasks, run.seed)
            records = run_method(run.method, tasks, run.params, run.seed, run.exemplars_per_class, run.also_ablation,
                                 stop=stop, on_task=lambda k: report([run.method, run.seed, k]))
        return {"records": records, "tasks": [t.name for t in tasks]}
    except RerelrpError as exc:
        return {"error": _carry(exc)}


def _carry(exc):
    attrs = {k: v for k, v in vars(exc).items() if isinstance(v, str | int | float | type(None))}
    return [type(exc).__module__, type(exc).__qualname__, str(exc), attrs]


def _revive(carried):
    module, name, message, attrs = carried
    cls = RerelrpError
    if str(module).startswith("rerelrp"):
        with suppress(ImportError, AttributeError):
            found = getattr(importlib.import_module(module), name)
            if isinstance(found, type) and issubclass(found, RerelrpError):
                cls = found
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(attrs)
    return exc


# ---------------------------------------------------------------- worker processes on this machine
_EVENTS = _STOP = None  # set in each worker process of a _ProcessPool


def _init_process_worker(events, stop):
    global _EVENTS, _STOP
    _EVENTS, _STOP = events, stop


def _process_run(run):
    return _execute(run, _STOP, lambda message: _EVENTS.put(("task", *message)))


class _ProcessPool:
    """``jobs`` fresh loky worker processes, with ``threads`` torch (and BLAS) threads each, an event
    they all see for Stop and a queue for per-task progress; ended when the comparison ends.

    The progress queue is a simple (unbuffered) one: a run's messages are written before its result
    goes back, so once every run is in, the idle workers can be killed at once instead of waiting
    seconds for each interpreter (torch, scikit-learn) to shut down.
    """

    def __init__(self, jobs, threads):
        from joblib.externals.loky import ProcessPoolExecutor
        from joblib.externals.loky.backend.context import get_context

        ctx = get_context("loky")
        self.events, self.stop = ctx.Queue(), ctx.Event()
        env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "LOKY_MAX_CPU_COUNT")}
        self.executor = ProcessPoolExecutor(max_workers=jobs, context=ctx, initializer=_init_process_worker,
                                            initargs=(self.events, self.stop), env=env)
        self.inbox, self.closing = queue.SimpleQueue(), threading.Event()
        self.forwarder = threading.Thread(target=self._forward, name="rerelrp-progress", daemon=True)
        self.forwarder.start()

    def _forward(self):
        while True:
            try:
                self.inbox.put(tuple(self.events.get(timeout=POLL_SECONDS)))
            except queue.Empty:
                if self.closing.is_set():
                    return

    def submit(self, run):
        return self.executor.submit(_process_run, run)

    def signal_stop(self):
        self.stop.set()

    def close(self, clean):
        self.stop.set()  # first: nothing may go on running once the caller stopped listening
        # clean: every run is in and its progress written, the workers are idle; otherwise (an error
        # here, Ctrl-C) whatever still runs is of no use
        self.executor.shutdown(wait=True, kill_workers=True)
        self.closing.set()
        self.forwarder.join(5 * POLL_SECONDS)


# ---------------------------------------------------------------- a Dask distributed cluster
class _PolledStop:
    """``is_set()`` of a Dask :class:`distributed.Event`, asked at most every ``every`` seconds (the
    learner asks at every batch)."""

    def __init__(self, event, every=REMOTE_STOP_POLL):
        self.event, self.every, self.asked, self.value = event, every, float("-inf"), False

    def is_set(self):
        now = time.monotonic()
        if not self.value and now - self.asked >= self.every:
            self.asked = now
            self.value = bool(self.event.is_set())
        return self.value


def _dask_run(run, topic, stop_name):
    from distributed import Event, get_worker

    worker = get_worker()
    return _execute(run, _PolledStop(Event(stop_name)), lambda message: worker.log_event(topic, message))


def connect(address):
    """A :class:`distributed.Client` of the scheduler at ``address``; clear errors when Dask is not
    installed or the scheduler cannot be reached."""
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--cluster needs Dask distributed, which is not installed: {CLUSTER_INSTALL}") from None
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address} ({exc}); start it with "
                          "'dask scheduler --host HOST --port PORT --no-dashboard' (docs/cluster.md)") from None


class _DaskPool:
    """The runs as Dask futures on the scheduler at ``address``; progress through a Dask topic only
    this comparison uses, Stop through a Dask event of its own."""

    def __init__(self, address):
        self.client = connect(address)  # first: a clear error without Dask
        from distributed import Event

        token = uuid.uuid4().hex[:12]
        self.topic, self.stop_name, self.token = f"rerelrp-progress-{token}", f"rerelrp-stop-{token}", token
        self.stop = Event(self.stop_name, client=self.client)
        self.inbox = queue.SimpleQueue()
        self.client.subscribe_topic(self.topic, lambda event: self.inbox.put(("task", *event[1])))
        self.futures = []

    def submit(self, run):
        future = self.client.submit(_dask_run, run, self.topic, self.stop_name, pure=False,
                                    key=f"rerelrp-{run.method}-seed{run.seed}-{self.token}")
        self.futures.append(future)
        return future

    def signal_stop(self):
        self.stop.set()  # running runs stop at their next batch; cancelling alone would let them train on

    def close(self, clean):
        try:
            if not clean:
                self.stop.set()
                self.client.cancel(self.futures)
            with suppress(ValueError):
                self.client.unsubscribe_topic(self.topic)
        finally:
            self.futures.clear()
            self.client.close()
