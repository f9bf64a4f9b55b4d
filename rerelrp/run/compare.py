"""Every method and seed on one task sequence, side by side: what ``rerelrp compare`` and the
Compare page run.

Each run learns the whole sequence with one method and one seed (same data, backbone, settings
and evaluation for all) and is kept as a record in the names other tools read: ``method``,
``seed``, ``final`` (``tag``, ``taw``, ``forgetting_tag``, ``forgetting_taw``), ``images_stored``,
``bytes_stored``, ``seconds``. ``rerelrp-maxsoftmax`` is the ablation that isolates what the
recognisers add: ReReLRP's own sub-networks, the task chosen by the most confident one (max
softmax, as PackNet-style methods do); it reads the same trained model as ``rerelrp`` (trained
once when both are asked for) and reports that training's time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import rerelrp.run.parallel as parallel
from rerelrp.errors import ConfigError, DataError
from rerelrp.figures.plots import comparison_figure, memory_figure
from rerelrp.fileio import RefusedFile, parse_json, read_regular, write_bytes_atomic, write_json_atomic
from rerelrp.run.method_run import ABLATION, EQUAL_BYTES, METHODS

MAX_COMPARISON_BYTES = 64 * 2**20  # a comparison of hundreds of runs is well under a megabyte


def parse_methods(text):
    """Method names from ``"a,b,c"`` (or a list), in order, once each; unknown names are refused."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s): {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    if not names:
        raise ConfigError(f"no method given; valid: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def parse_seeds(text):
    """Seeds from ``"0,1,2"`` (or a list of ints): whole numbers ≥ 0, once each."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        seeds = [int(str(s).strip()) for s in parts if str(s).strip()]
    except ValueError:
        raise ConfigError(f"seeds must be whole numbers separated by commas, not '{text}'") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"give at least one seed ≥ 0, not '{text}'")
    return list(dict.fromkeys(seeds))


def plan(methods, seeds):
    """The runs to do, in order: ``[(method, seed, also_ablation)]`` (the ablation rides on ``rerelrp``)."""
    both = "rerelrp" in methods and ABLATION in methods
    return [(m, s, both and m == "rerelrp") for s in seeds for m in methods if not (both and m == ABLATION)]


def compare(load_tasks, methods, seeds, params, exemplars_per_class=20, callback=None, stop=None, on_run=None,
            on_task=None, jobs=1, threads=None, cluster=None, reuse=()):
    """Run every method for every seed; ``load_tasks(seed)`` gives the task sequence of a seed.

    ``reuse``: records of runs already made (:func:`rerelrp.run.method_run.trained_records`); their
    method and seed are not run again.

    ``on_run(record)`` receives each finished run record, ``on_task(method, seed, k)`` the
    number of tasks a run has learned (0 when it starts). Returns the comparison (``runs`` and what they were run with).

    Where the runs run (:mod:`rerelrp.run.parallel`): here, one after another, with ``jobs=1``; in
    ``jobs`` worker processes, or on the Dask scheduler at ``cluster`` (``tcp://HOST:PORT``), as
    many at once as there are workers. ``threads`` torch threads per run (``None``: as they are;
    the same figures need the same count). Away from this process ``load_tasks`` should be a
    :class:`rerelrp.run.method_run.TaskRecipe`, so that each worker loads the data itself; ``callback``
    (phase progress) reaches only runs in this process, ``on_task`` and ``stop`` every run.
    """

    methods, seeds = parse_methods(methods), parse_seeds(seeds)
    if EQUAL_BYTES in methods and "rerelrp" not in methods:
        raise ConfigError(f"{EQUAL_BYTES} keeps as many bytes as ReReLRP's recognition store of the same seed: "
                          "compare it together with rerelrp")
    runs, names = list(reuse), None
    done = {(r["method"], r["seed"]) for r in reuse}
    todo = [run for run in plan(methods, seeds) if (run[0], run[1]) not in done and run[0] != EQUAL_BYTES]

    def gather(planned, per_class):
        nonlocal names
        for records, task_names in parallel.fan_out(load_tasks, planned, params, per_class, jobs, threads, cluster,
                                                    callback, stop, on_task):
            names = names or task_names
            runs.extend(records)
            for record in records if on_run else ():
                on_run(record)

    for record in reuse if on_run else ():
        on_run(record)
    gather(todo, exemplars_per_class)
    for seed in seeds if EQUAL_BYTES in methods else ():  # once ReReLRP's store of that seed is known
        store = next(r["bytes_stored"] for r in runs if r["method"] == "rerelrp" and r["seed"] == seed)
        gather([(EQUAL_BYTES, seed, False)], equal_bytes_exemplars(store, load_tasks(seed)))
    if names is None:  # every run was reused
        names = [t.name for t in load_tasks(seeds[0])]
    order = {m: k for k, m in enumerate(methods)}
    runs.sort(key=lambda r: (order[r["method"]], r["seed"]))
    result = {"methods": methods, "seeds": seeds, "tasks": names, "settings": dict(params),
              "exemplars_per_class": exemplars_per_class, "runs": runs}
    if threads is not None:
        result["threads"] = threads  # torch threads per run: the figures are those of this count
    return result


def equal_bytes_exemplars(store_bytes, tasks):
    """Exemplars per class of the sequence whose uint8 images take at most ``store_bytes`` (at least 1): the
    memory of ``replay-equal-bytes``, which keeps as many bytes as ReReLRP's recognition store."""
    image_bytes = max(int(np.prod(t.train.images.shape[1:])) for t in tasks)
    return max(1, int(store_bytes) // (image_bytes * sum(t.n_classes for t in tasks)))


def summary(result):
    """Per method: mean and sd over seeds of the final figures, what it stores and its wall time."""
    rows = []
    for method in result["methods"]:
        runs = [r for r in result["runs"] if r["method"] == method]
        if not runs:
            continue
        row = {"method": method, "seeds": len(runs)}
        for key in ("tag", "taw", "forgetting_tag", "forgetting_taw"):
            values = np.array([r["final"][key] for r in runs])
            row[key] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
        row["images_stored"] = int(np.mean([r["images_stored"] for r in runs]))
        row["bytes_stored"] = int(np.mean([r["bytes_stored"] for r in runs]))
        row["seconds"] = float(np.mean([r["seconds"] for r in runs]))
        rows.append(row)
    return rows


HEADER = ("method", "seeds", "TAg", "TAw", "forgetting TAg", "forgetting TAw", "images stored", "bytes stored",
          "seconds per run")


def table_rows(result):
    """The comparison as text cells under :data:`HEADER`: mean ± sd over the seeds, or "(1 seed)" (markdown, reports, app)."""
    rows = []
    forest = (result.get("settings") or {}).get("recognizer", "forest") == "forest"  # files from before the setting: forests
    for row in summary(result):
        kept = ("relevance rows" if forest else "class statistics") if row["method"].startswith("rerelrp") else "images"
        spread = (lambda sd: f" ± {sd:.2f}") if row["seeds"] > 1 else (lambda sd: " (1 seed)")  # no sd of one run
        rows.append([row["method"], str(row["seeds"])]
                    + [f"{row[k][0]:.2f}{spread(row[k][1])}" for k in ("tag", "taw", "forgetting_tag", "forgetting_taw")]
                    + [str(row["images_stored"]), f"{row['bytes_stored'] / 1024:,.0f} KiB ({kept})",
                       f"{row['seconds']:.0f}"])
    return rows


def markdown(result):
    """The comparison as a markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(result)]
    return "\n".join(lines) + "\n"


def write_comparison(result, out):
    """``compare.json``, ``compare.md`` and ``compare.html`` (TAg after each task and TAg against bytes stored,
    plotly inlined: opens offline) in ``out``."""
    import html as markup

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "compare.json", result)
    title = f"Comparison on {' → '.join(result['tasks'] or [])}"
    write_bytes_atomic(out / "compare.md", (f"# {title}\n\n" + markdown(result)).encode())
    figures = [comparison_figure(result).to_html(include_plotlyjs=True, full_html=False),
               memory_figure(result).to_html(include_plotlyjs=False, full_html=False)]
    html = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{markup.escape(title)}</title></head><body>\n'
            + "\n".join(figures) + "\n</body></html>\n")
    write_bytes_atomic(out / "compare.html", html.encode())
    return [out / "compare.json", out / "compare.md", out / "compare.html"]


def read_comparison(path, follow_links=True):
    """A ``compare.json`` written by :func:`write_comparison`; a clear error naming the file otherwise.

    Read like any file a workspace someone sent may hold: a regular file of at most
    ``MAX_COMPARISON_BYTES``, JSON of bounded depth (``follow_links=False`` for the one inside a
    workspace; a path the user gives may be a link).
    """
    path = Path(path)
    try:
        result = parse_json(read_regular(path, MAX_COMPARISON_BYTES, follow_links=follow_links))
    except (OSError, ValueError, RefusedFile) as exc:
        raise DataError(str(path), f"cannot read the comparison: {exc}") from None
    if not isinstance(result, dict) or not isinstance(result.get("runs"), list) or not result.get("methods"):
        raise DataError(str(path), "not a comparison written by 'rerelrp compare' (no 'methods' and 'runs')")
    return result
