"""The figures of rerelrp.figures.plots and the images of rerelrp.figures.display_images: shapes, colours, relevance maps."""
import numpy as np
import plotly.graph_objects as go
import pytest

from rerelrp.figures import display_images, image_figures, plots


def test_task_colors_are_distinct_stable_and_never_grey():
    ten, thirty = plots.task_colors(10), plots.task_colors(30)
    assert len(ten) == 10 and len(thirty) == 30
    assert thirty[:10] == ten  # task i keeps its colour however many tasks there are
    assert len(set(thirty)) == 30
    assert plots.FREE_COLOR not in thirty
    assert plots.task_colors(0) == []


def test_heatmap_rgb_zero_is_white_and_sign_maps_to_red_and_blue():
    h = np.array([[0.0, 2.0], [-2.0, 1.0]])
    rgb = display_images.heatmap_rgb(h)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [255, 255, 255]  # 0 -> white
    assert rgb[0, 1].tolist() == [255, 0, 0]  # +max -> pure red
    assert rgb[1, 0].tolist() == [0, 0, 255]  # -max -> pure blue
    assert rgb[1, 1].tolist() == [255, 128, 128]  # half way to red


def test_heatmap_rgb_is_linear_white_to_red_and_to_blue():
    v = np.linspace(-1, 1, 2001)
    rgb = display_images.heatmap_rgb(3.0 * v[None, :])[0].astype(float)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    expected = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1) * 255
    assert np.abs(rgb - expected).max() <= 0.5  # exact up to rounding to uint8
    assert rgb[1000].tolist() == [255, 255, 255] and rgb[-1].tolist() == [255, 0, 0] and rgb[0].tolist() == [0, 0, 255]


def test_heatmap_rgb_is_symmetric_around_zero_and_scale_free():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(16, 16))
    pos, neg = display_images.heatmap_rgb(h), display_images.heatmap_rgb(-h)
    assert np.array_equal(pos[..., 0], neg[..., 2])  # swapping the sign swaps red and blue
    assert np.array_equal(pos[..., 1], neg[..., 1])
    assert np.array_equal(display_images.heatmap_rgb(h * 1e-6), pos)  # scaled by the largest magnitude
    # only positive values: no blue-ish pixel; only negative: no red-ish pixel
    only_pos = display_images.heatmap_rgb(np.abs(h))
    assert np.all(only_pos[..., 0] == 255)
    only_neg = display_images.heatmap_rgb(-np.abs(h))
    assert np.all(only_neg[..., 2] == 255)


def test_heatmap_rgb_handles_all_zero_and_nan():
    assert np.all(display_images.heatmap_rgb(np.zeros((3, 4))) == 255)
    rgb = display_images.heatmap_rgb(np.array([[np.nan, 1.0]]))
    assert rgb[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError):
        display_images.heatmap_rgb(np.zeros((2, 2, 2)))


def test_heatmap_overlay_keeps_the_image_where_relevance_is_zero():
    image = np.arange(64, dtype=np.uint8).reshape(8, 8, 1) * 3
    h = np.zeros((16, 16))
    h[0, 0], h[15, 15] = 1.0, -1.0
    out = display_images.heatmap_rgb(h, image, overlay=True)
    assert out.shape == (16, 16, 3)
    gray = np.repeat(np.repeat(image[..., 0], 2, 0), 2, 1)  # 8 -> 16 px, each pixel twice
    assert np.array_equal(out[5, 5], [gray[5, 5]] * 3)  # relevance 0: the input shows unchanged
    assert out[0, 0].tolist() == [255, 0, 0]  # strongest positive: opaque red
    assert out[15, 15].tolist() == [0, 0, 255]
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 1] = 200
    assert display_images.heatmap_rgb(np.zeros((8, 8)), colour, overlay=True)[0, 0].tolist() == [67, 67, 67]  # gray of the input


def test_accuracy_matrix_figure_is_lower_triangular_0_to_100():
    matrix = [[90.0], [80.0, 95.0], [70.0, 85.0, 99.0]]
    fig = plots.accuracy_matrix_figure(matrix, ["a", "b", "c"], "TAg")
    heat = fig.data[0]
    z = np.array(heat.z, dtype=float)
    nan = np.nan
    np.testing.assert_array_equal(z, [[90.0, nan, nan], [80.0, 95.0, nan], [70.0, 85.0, 99.0]])
    assert list(heat.y) == ["after 0: a", "after 1: b", "after 2: c"]
    assert heat.zmin == 0 and heat.zmax == 100
    assert heat.text[2][1] == "85.0" and heat.text[0][2] == ""
    assert list(heat.x) == ["0: a", "1: b", "2: c"]
    assert fig.layout.title.text == "TAg"
    # a square numpy matrix works too; the upper triangle is hidden
    square = np.array([[50.0, 7.0], [40.0, 60.0]])
    sq = plots.accuracy_matrix_figure(square, ["a", "b"], "x")
    np.testing.assert_array_equal(np.array(sq.data[0].z, dtype=float), [[50.0, np.nan], [40.0, 60.0]])
    assert square[0, 1] == 7.0  # the caller's array is not changed


def test_capacity_figure_stacks_tasks_then_free_and_flags_low_layers():
    rows = [
        {"layer": "conv1", "units": 10, "kept_by_task": [4, 5], "new_by_task": [4, 5], "shared": 0, "free": 1,
         "free_share": 0.1, "warning": True},
        {"layer": "fc1", "units": 20, "kept_by_task": [5, 6], "new_by_task": [5, 3], "shared": 3, "free": 12,
         "free_share": 0.6, "warning": False},
    ]
    fig = plots.capacity_figure(rows, ["t0", "t1"], min_free=0.2)
    bars = [d for d in fig.data if isinstance(d, go.Bar)]
    assert [b.name for b in bars] == ["task 0: t0", "task 1: t1", "free"]
    assert fig.layout.barmode == "stack"
    colors = plots.task_colors(2)
    assert bars[0].marker.color == colors[0] and bars[1].marker.color == colors[1]
    assert bars[2].marker.color == plots.FREE_COLOR
    # in units: each task's bar is the units it kept first, free is the rest, and together the layer's units
    units = np.array([r["units"] for r in rows])
    counts = [np.array(b.x, dtype=float) * units / 100.0 for b in bars]
    np.testing.assert_allclose(counts, [[4, 5], [5, 3], [1, 12]])
    np.testing.assert_allclose(np.sum(counts, axis=0), units)
    assert [list(np.asarray(b.customdata)[:, 0]) for b in bars] == [[4, 5], [5, 3], [1, 12]]  # hover says the same
    assert list(np.asarray(bars[1].customdata)[:, 1]) == [5, 6]  # and how many units the task uses
    assert fig.layout.meta["warned_layers"] == ["conv1"]
    texts = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("⚠") and "1/10" in t for t in texts)
    assert any("shared 3" in t and not t.startswith("⚠") for t in texts)


def test_capacity_history_figure_one_line_per_layer():
    after0 = [{"layer": "a", "free_share": 0.8}, {"layer": "b", "free_share": 0.9}]
    after1 = [{"layer": "a", "free_share": 0.5}, {"layer": "b", "free_share": 0.7}]
    fig = plots.capacity_history_figure([after0, after1], ["t0", "t1"], min_free=0.2)
    assert [d.name for d in fig.data] == ["a", "b"]
    assert list(fig.data[0].y) == [80.0, 50.0]
    assert list(fig.data[0].x) == ["0: t0", "1: t1"]


def test_recognition_figure_highlights_the_chosen_task():
    fig = plots.recognition_figure([0.1, 0.7, 0.2], ["a", "b", "c"])
    bar = fig.data[0]
    assert list(bar.y) == [0.1, 0.7, 0.2]
    assert list(bar.x) == ["0: a", "1: b", "2: c"]
    assert list(bar.text) == ["0.10", "0.70", "0.20"]
    assert list(bar.marker.line.color) == ["rgba(0,0,0,0)", "#222222", "rgba(0,0,0,0)"]  # the chosen one outlined
    assert list(bar.marker.opacity) == [0.45, 1.0, 0.45]
    assert list(bar.marker.color) == plots.task_colors(3)


def test_heatmap_figure_has_input_plus_one_panel_per_subnetwork():
    image = np.zeros((8, 8, 1), np.uint8)
    maps = np.random.default_rng(1).normal(size=(3, 28, 28))
    titles = [f"task {m}: predicted x (p=0.50)" for m in range(3)]
    fig = image_figures.heatmap_figure(image, maps, titles, overlay=True)
    images = [d for d in fig.data if isinstance(d, go.Image)]
    assert len(images) == 4
    assert all(np.asarray(d.z).shape == (28, 28, 3) for d in images)
    assert [a.text for a in fig.layout.annotations] == ["input"] + titles
    # panel m is the colour map of heat map m
    assert np.array_equal(np.asarray(images[1].z), display_images.heatmap_rgb(maps[0], image, overlay=True))


def test_timings_figure_stacks_phases():
    seconds = [{"train": 3.0, "relevance": 1.0, "prune": 0.5, "recognizer": 0.2, "eval": 0.3},
               {"train": 4.0, "relevance": 1.5, "prune": 0.5, "recognizer": 0.8, "eval": 0.4}]
    fig = plots.timings_figure(seconds)
    assert [d.name for d in fig.data] == ["train", "relevance", "prune", "recognizer", "eval"]
    assert fig.layout.barmode == "stack"
    assert list(fig.data[0].y) == [3.0, 4.0]
    named = plots.timings_figure(seconds, ["a", "b"])
    assert list(named.data[0].x) == ["0: a", "1: b"]


def test_train_curve_and_sample_grid():
    curve = [{"epoch": 1, "loss": 1.0, "train_acc": 50.0, "val_acc": 55.0},
             {"epoch": 2, "loss": 0.5, "train_acc": 80.0, "val_acc": 85.0}]
    fig = plots.train_curve_figure(curve)
    assert [d.name for d in fig.data] == ["loss", "train acc", "val acc"]
    images = np.zeros((6, 8, 8, 1), np.uint8)
    images[3:] = 255
    grid, row = display_images.sample_grid(images, np.array([0, 0, 0, 1, 1, 1]), 2, per_class=3)
    assert grid.shape == (2 * 9 + 1, 3 * 9 + 1, 3) and row == 9
    assert grid[1:9, 1:9].max() == 0 and grid[10:18, 1:9].min() == 255  # class 0 dark row, class 1 bright row
    fig = image_figures.sample_grid_figure(images, np.array([0, 0, 0, 1, 1, 1]), ["dark", "bright"], per_class=3)
    assert list(fig.layout.yaxis.ticktext) == ["dark", "bright"]


def test_heatmap_figure_colour_bar_matches_the_panels():
    """The figure's colour bar is drawn by plotly, the panels by heatmap_rgb: -max, 0 and +max look the same."""
    from plotly.colors import unlabel_rgb

    fig = image_figures.heatmap_figure(np.zeros((4, 4, 3), np.uint8), [np.ones((4, 4))], ["t"])
    bar = next(d for d in fig.data if isinstance(d, go.Heatmap))
    assert (bar.zmin, bar.zmax) == (-1, 1) and bar.showscale
    stops = {float(at): [round(c) for c in unlabel_rgb(color)] for at, color in bar.colorscale}
    panel = display_images.heatmap_rgb(np.array([[-1.0, 0.0, 1.0]]))[0].tolist()
    assert [stops[0.0], stops[0.5], stops[1.0]] == panel


def test_heatmaps_of_8_tasks_wrap_mark_the_chosen_one_and_can_share_one_scale():
    from rerelrp.figures.display_images import heatmap_rgb
    from rerelrp.figures.image_figures import heatmap_figure

    image = np.zeros((8, 8, 3), np.uint8)
    heatmaps = [np.full((8, 8), float(m + 1)) for m in range(8)]  # task m is m+1 times as strong as task 0
    titles = [f"task {m}: a long task name that cannot fit above one small panel, predicted class x" for m in range(8)]
    fig = heatmap_figure(image, heatmaps, titles, chosen=3)
    assert len({t.xaxis for t in fig.data if t.type == "image"}) == 9 and fig.layout.height > 400  # three rows of four
    shown = [a.text for a in fig.layout.annotations]
    assert all(len(t) <= 32 for t in shown) and shown[4].startswith("▶")  # panel 4 = task 3
    assert fig.layout.shapes[0].xref == "x5 domain"  # the frame around task 3's panel
    own = heatmap_figure(image, heatmaps, titles).data[1].z
    shared = heatmap_figure(image, heatmaps, titles, shared_scale=True)
    assert np.array_equal(own, heatmap_figure(image, heatmaps, titles).data[8].z)  # each its own max: all pure red
    assert np.array_equal(shared.data[8].z, heatmap_rgb(heatmaps[7], image))  # the strongest stays pure red
    assert not np.array_equal(shared.data[1].z, own)  # the weakest is paler on the shared scale
