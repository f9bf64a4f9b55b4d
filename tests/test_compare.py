"""Baselines and the comparison: what each method forgets and keeps, `rerelrp compare`, its files,
the ablation, the app's comparison job and the report's table."""
import json

import numpy as np
import pytest

from conftest import FAST, no_network
from rerelrp.cli import main
from rerelrp.data import build_sequence, load_dataset
from rerelrp.errors import ConfigError
from rerelrp.run import compare

# enough training for the methods to differ (the digits demo, 5 tasks of 2 classes), short enough for CI
BASELINE_SETTINGS = dict(epochs=2, min_steps=40)
CONTINUAL = ("finetune", "ewc", "lwf", "icarl", "replay")
FAST_ARGS = ["--epochs", "1", "--min-steps", "0", "--prune-samples", "64", "--relevance-samples", "64",
             "--recognizer-samples", "64", "--trees", "20", "--quiet"]


@pytest.fixture(scope="module")
def digits():
    tasks = build_sequence([load_dataset("demo", seed=0)], None)
    result = compare.compare(lambda seed: tasks, [*CONTINUAL, "joint"], [0], BASELINE_SETTINGS)
    return {r["method"]: r for r in result["runs"]}, tasks


def test_finetune_forgets_the_old_tasks(digits):
    runs, _ = digits
    final = runs["finetune"]["final"]
    assert final["tag"] < 30 and final["forgetting_tag"] > 30


def test_joint_training_is_the_upper_bound(digits):
    runs, _ = digits
    for method in CONTINUAL:
        assert runs["joint"]["final"]["tag"] >= runs[method]["final"]["tag"], method


def test_exemplar_methods_beat_finetune(digits):
    runs, _ = digits
    for method in ("icarl", "replay"):
        assert runs[method]["final"]["tag"] > runs["finetune"]["final"]["tag"] + 5, method


def test_each_method_reports_the_images_it_keeps(digits):
    runs, tasks = digits
    per_image = tasks[0].train.images[0].nbytes
    for method in ("icarl", "replay"):  # 20 per class, 10 classes
        assert runs[method]["images_stored"] == 200 and runs[method]["bytes_stored"] == 200 * per_image
    for method in ("finetune", "ewc", "lwf"):
        assert runs[method]["images_stored"] == 0 and runs[method]["bytes_stored"] == 0
    assert runs["joint"]["images_stored"] == sum(len(t.train) for t in tasks)


def test_herding_picks_the_images_whose_mean_is_closest_to_the_class_mean():
    from types import SimpleNamespace

    import torch

    from rerelrp.baselines import ICaRL

    learner = ICaRL(exemplars_per_class=2)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])  # class mean (0.175, 0.425)
    learner._features = lambda images: f[images]
    task = SimpleNamespace(train=SimpleNamespace(images=np.arange(4)))
    # first the image nearest the mean (2, not 1: 0.35 < 0.36); then the one that pulls the pair's mean
    # closest to it (3: mean (-0.15, 0.35)), not the nearest remaining image (1)
    assert list(learner._select(task, np.arange(4), 0, None, 2)) == [2, 3]


@pytest.mark.parametrize("method", ["replay", "icarl"])
def test_a_fixed_memory_is_full_from_the_first_task_and_older_classes_give_up_their_last_exemplars(method):
    from rerelrp.baselines import make_baseline

    tasks = build_sequence([load_dataset("demo", seed=0)], None)[:3]
    learner = make_baseline(method, epochs=1, min_steps=0, exemplars_per_class=5, memory_size=60)
    learner.add_task(tasks[0])
    first = {c: m.copy() for c, m in learner.memory_.items()}
    assert [len(m) for m in first.values()] == [30, 30] and learner.stored()[0] == 60
    learner.add_task(tasks[1])
    learner.add_task(tasks[2])
    assert [len(m) for m in learner.memory_.values()] == [10] * 6  # 60 shared by 6 classes
    for c in first:  # a prefix of what the class kept first: the images it would keep longest
        assert np.array_equal(learner.memory_[c], first[c][:10])
    growing = make_baseline(method, epochs=1, min_steps=0, exemplars_per_class=5)
    growing.add_task(tasks[0])
    assert growing.stored()[0] == 10


def test_only_joint_training_keeps_its_best_epoch():
    """A shared-weight baseline judged by the new task's validation images alone would choose against the old
    tasks: it keeps the schedule's last epoch, whatever ``best_epoch`` says; joint training judges every task."""
    from rerelrp.baselines import make_baseline

    tasks = build_sequence([load_dataset("demo", seed=0)], None)[:2]
    for method, chooses in (("replay", False), ("icarl", False), ("ewc", False), ("joint", True)):
        learner = make_baseline(method, epochs=3, min_steps=0, best_epoch=True)
        for task in tasks:
            learner.add_task(task)
        for report in learner.history_:
            kept = [row["epoch"] for row in report.train_curve if row.get("kept")]
            assert len(report.train_curve) == 3 and all("val_acc" in row for row in report.train_curve), method
            assert (len(kept) == 1) if chooses else (kept == []), method


def test_cli_compare_writes_its_files_without_touching_the_network(tmp_path, capsys):
    out = tmp_path / "cmp"
    with no_network() as attempts:
        rc = main(["compare", "--data", "demo", "--tasks", "2", "--methods", "rerelrp,rerelrp-maxsoftmax,replay,ewc",
                   "--seeds", "0,1", "--exemplars-per-class", "5", "--out", str(out), *FAST_ARGS])
    assert rc == 0 and attempts == []
    data = json.loads((out / "compare.json").read_text())
    assert [(r["method"], r["seed"]) for r in data["runs"]] == [
        (m, s) for m in ("rerelrp", "rerelrp-maxsoftmax", "replay", "ewc") for s in (0, 1)]
    for r in data["runs"]:
        assert set(r["final"]) == {"tag", "taw", "forgetting_tag", "forgetting_taw", "tag_ci95", "taw_ci95"}
        assert {"method", "seed", "images_stored", "bytes_stored", "seconds"} <= set(r) and r["seconds"] > 0
        assert len(r["tag_after_each_task"]) == 2
    by = {(r["method"], r["seed"]): r for r in data["runs"]}
    for seed in (0, 1):
        rerelrp, ablation = by["rerelrp", seed], by["rerelrp-maxsoftmax", seed]
        assert rerelrp["images_stored"] == 0 and rerelrp["bytes_stored"] > 0  # class statistics, no image
        assert ablation["final"]["taw"] == rerelrp["final"]["taw"]  # the same sub-networks, trained once
        assert ablation["seconds"] == rerelrp["seconds"]
        assert by["replay", seed]["images_stored"] == 5 * 10
    assert by["rerelrp", 0]["final"] != by["rerelrp", 1]["final"]  # the seeds differ
    table = (out / "compare.md").read_text()
    assert table.count(" ± ") >= 4 * 4 and "KiB (class statistics)" in table and "KiB (images)" in table
    html = (out / "compare.html").read_text()
    assert "rerelrp-maxsoftmax" in html and "<script src=" not in html  # plotly inlined: opens offline
    assert "TAg after each task" in html and "bytes stored (log scale)" in html  # both figures
    assert "compare.json" in capsys.readouterr().out


def test_an_unknown_method_is_refused_with_the_valid_names(tmp_path, capsys):
    rc = main(["compare", "--data", "demo", "--methods", "rerelrp,packnet", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "packnet" in err
    for method in compare.METHODS:
        assert method in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="whole numbers"):
        compare.parse_seeds("0,one")


def test_the_app_runs_a_comparison_in_the_background_and_reports_it(tmp_path):
    from rerelrp.app.session import AppState
    from rerelrp.method.learner import ReReLRP
    from rerelrp.report import build_report, render_html, render_pdf
    from rerelrp.run.runner import SequenceRun

    state = AppState(settings=FAST, demo="digits", workspace_root=tmp_path)
    state.set_plan(state.tasks[:2])
    job = state.start_compare(["finetune", "replay"], "0", 5)
    assert job.wait(600) and job.state == "done", job.error
    assert [r["method"] for r in job.results] == ["finetune", "replay"] and state.n_learned == 0
    assert state.comparison["runs"] == job.results
    finished = state.comparison
    with pytest.raises(ConfigError, match="unknown method"):
        state.start_compare(["finetune", "packnet"], "0")
    stopped = state.start_compare(["finetune", "replay"], "0,1", 5)
    stopped.stop()  # before its first batch: nothing finished, the partial comparison says so
    assert stopped.wait(600) and stopped.state == "stopped"
    assert state.comparison["stopped"] and state.comparison["runs"] == stopped.snapshot().results
    learner = ReReLRP(**FAST)
    run = SequenceRun(learner, state.tasks[:2])
    run.run()
    content = build_report(learner, run.metrics, {"name": "t"}, comparison=finished)
    html = render_html(content)
    assert "Comparison with baselines" in html and "replay" in html and "images" in html
    assert "Final TAg against the bytes each method keeps" in html  # the memory figure beside the table
    from io import BytesIO

    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(BytesIO(render_pdf(content))).pages)
    assert "Comparison with baselines" in text and "replay" in text
    assert "bytes stored (log scale)" in text  # the PDF draws the memory chart under the table
    assert "Comparison with baselines" not in render_html(build_report(learner, run.metrics, {"name": "t"}))


def test_the_memory_figure_puts_each_method_at_the_bytes_it_keeps():
    from rerelrp.figures.plots import memory_figure

    def run(method, seed, tag, stored):
        return {"method": method, "seed": seed, "final": {"tag": tag}, "bytes_stored": stored}

    result = {"methods": ["rerelrp", "<b>replay</b>", "finetune", "lwf"],
              "runs": [run("rerelrp", 0, 80.0, 1000), run("rerelrp", 1, 84.0, 3000),
                       run("<b>replay</b>", 0, 70.0, 2000), run("finetune", 0, 20.0, 0)]}
    fig = memory_figure(result)
    means = {t.name: t for t in fig.data if t.showlegend is not False}
    assert set(means) == {"rerelrp", "&lt;b&gt;replay&lt;/b&gt;"}  # a name from the data is not markup
    rerelrp = means["rerelrp"]
    assert list(rerelrp.x) == [2000.0] and list(rerelrp.y) == [82.0]
    assert np.isclose(rerelrp.error_y.array[0], np.std([80, 84], ddof=1))
    assert np.isclose(rerelrp.error_x.array[0], np.std([1000, 3000], ddof=1))
    assert means["&lt;b&gt;replay&lt;/b&gt;"].error_y.visible is False  # one seed: no spread drawn
    seeds = [t for t in fig.data if t.showlegend is False]
    assert sorted(x for t in seeds for x in t.x) == [1000, 2000, 3000]
    # fine-tuning keeps nothing: a dotted line at its TAg, not a point at 0 on a log axis; lwf has no run
    assert [shape.y0 for shape in fig.layout.shapes] == [20.0]
    assert "finetune (keeps nothing)" in fig.layout.annotations[0].text
    assert fig.layout.xaxis.type == "log"
    from rerelrp.report.pdf_charts import memory_chart
    from rerelrp.report.pdf_layout import PdfLayout

    for shown in (result, {"methods": ["finetune"], "runs": [run("finetune", 0, 20.0, 0)]}):  # nothing on the log axis
        layout = PdfLayout("t", ["a"])
        layout.pdf.add_page()
        memory_chart(layout, shown)
        assert bytes(layout.pdf.output()).startswith(b"%PDF")


def test_one_seed_says_so_instead_of_a_zero_spread():
    from rerelrp.run.compare import table_rows

    final = {"tag": 80.0, "taw": 90.0, "forgetting_tag": 5.0, "forgetting_taw": 0.0}
    run = {"method": "rerelrp", "seed": 0, "final": final, "images_stored": 0, "bytes_stored": 2048, "seconds": 3.0}
    one = table_rows({"methods": ["rerelrp"], "runs": [run]})[0]
    assert one[2] == "80.00 (1 seed)" and "±" not in " ".join(one)
    two = table_rows({"methods": ["rerelrp"], "runs": [run, {**run, "seed": 1, "final": {**final, "tag": 82.0}}]})[0]
    assert two[2] == "81.00 ± 1.41"


def test_the_compare_page_reads_the_trained_model_instead_of_training_it_again(tmp_path):
    """The published model's records equal a fresh run's (the ablation's rows too, from the final model's
    first sub-networks), and a comparison that asks for that run does not train ReReLRP again."""
    from rerelrp.app.session import AppState
    from rerelrp.run.method_run import run_method

    state = AppState(settings=FAST, demo="digits", workspace_root=tmp_path)
    state.set_plan(state.tasks[:3])
    assert state.start_training(None).wait(600) and state.n_learned == 3
    fresh = run_method("rerelrp", state.tasks, dict(state.learner.history_[0].settings), 0, also_ablation=True)
    job = state.start_compare(["rerelrp", "rerelrp-maxsoftmax"], "0", 5)
    assert job.wait(600) and job.state == "done", job.error
    reused = {r["method"]: r for r in state.comparison["runs"]}
    assert all(r["reused"] for r in reused.values()) and state.comparison["tasks"] == [t.name for t in state.tasks]
    for record in fresh:
        mine = reused[record["method"]]
        for key in ("final", "acc_tag", "acc_taw", "task_recognition", "bytes_stored", "images_stored"):
            assert mine[key] == record[key], (record["method"], key)
    state.update_settings(epochs=2)  # other settings: that model is not the run asked for, so it is trained
    job = state.start_compare(["rerelrp"], "0", 5)
    assert job.wait(600) and job.state == "done", job.error
    assert "reused" not in job.results[0]


def test_replay_at_equal_bytes_keeps_as_many_bytes_as_the_rerelrp_store_of_its_seed():
    tasks = build_sequence([load_dataset("demo", seed=0)], None)[:2]
    with pytest.raises(ConfigError, match="together with rerelrp"):
        compare.compare(lambda seed: tasks, ["replay-equal-bytes"], [0], FAST)
    result = compare.compare(lambda seed: tasks, ["rerelrp", "replay-equal-bytes"], [0], FAST)
    rerelrp, equal = result["runs"]
    assert equal["method"] == "replay-equal-bytes" and rerelrp["method"] == "rerelrp"
    per_image, n_classes = tasks[0].train.images[0].nbytes, sum(t.n_classes for t in tasks)
    assert equal["exemplars_per_class"] == rerelrp["bytes_stored"] // (per_image * n_classes) > 20
    most = min(equal["exemplars_per_class"], min(np.bincount(t.train.labels).min() for t in tasks))
    assert most * n_classes * per_image <= equal["bytes_stored"] <= rerelrp["bytes_stored"]


def test_the_memory_figure_script_labels_other_rerelrp_settings_and_refuses_another_protocol(tmp_path):
    """bench/memory_figure.py merges comparisons that differ only in ReReLRP's own settings, naming them."""
    import importlib.util
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench"
    spec = importlib.util.spec_from_file_location("memory_figure", bench / "memory_figure.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def comparison(name, settings, methods):
        path = tmp_path / name
        runs = [{"method": m, "seed": 0, "final": {"tag": 80.0}, "bytes_stored": 1000} for m in methods]
        path.write_text(json.dumps({"tasks": ["a", "b"], "settings": settings, "methods": methods, "runs": runs}))
        return str(path)

    old = comparison("old.json", {"epochs": 10}, ["rerelrp", "replay-equal-bytes", "replay"])  # before the setting existed
    new = comparison("new.json", {"epochs": 10, "recognizer": "gaussian", "room_steps": 100}, ["rerelrp", "replay-equal-bytes"])
    result = script.merged([new, old])
    assert result["methods"] == ["rerelrp", "replay-equal-bytes", "rerelrp (recognizer forest, room_steps 0)",
                                 "replay-equal-bytes (recognizer forest, room_steps 0)", "replay"]
    assert script.merged([new, new])["methods"] == ["rerelrp", "replay-equal-bytes"]
    with pytest.raises(SystemExit, match="other settings"):
        script.merged([new, comparison("other.json", {"epochs": 5, "recognizer": "gaussian"}, ["rerelrp"])])
