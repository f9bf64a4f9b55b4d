"""Plotly figures made of images: relevance heatmaps beside their input, and sample grids of a data set.

Pure functions, data in, figure out, like :mod:`rerelrp.figures.plots` (whose colours, label
cutting and layout they share); the pixels come from :mod:`rerelrp.figures.display_images`.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rerelrp.data.images import resize_nearest
from rerelrp.figures.display_images import as_rgb, heatmap_rgb, sample_grid
from rerelrp.figures.plots import BWR_SCALE, apply_layout, safe, short


def heatmap_figure(image, heatmaps, titles, overlay=False, input_title="input", chosen=None, shared_scale=False,
                   per_row=4):
    """The input, then one relevance panel per sub-network, in rows of ``per_row``, with one colour bar.

    Titles are cut to fit a panel (the hover has the whole title); the ``chosen`` sub-network's
    panel is framed; ``shared_scale`` scales every panel by the largest magnitude of all, so that
    panels can be compared, instead of each by its own.
    """
    heatmaps = [np.asarray(h) for h in heatmaps]
    shape = heatmaps[0].shape if heatmaps else np.asarray(image).shape[:2]
    scale = max((float(np.abs(np.nan_to_num(h)).max()) for h in heatmaps), default=0.0) if shared_scale else None
    panels = [resize_nearest(as_rgb(image), shape)]
    panels += [heatmap_rgb(h, image, overlay, scale=scale) for h in heatmaps]
    n = len(panels)
    cols = min(n, per_row)
    rows = -(-n // cols)
    full = [input_title, *titles]
    shown = [("▶ " if chosen is not None and i == chosen + 1 else "") + short(t, 22 if cols >= 5 else 30 if cols == 4 else 40)
             for i, t in enumerate(full)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[safe(t) for t in shown],
                        horizontal_spacing=0.02, vertical_spacing=0.08 if rows > 1 else 0.02)
    for i, panel in enumerate(panels):
        fig.add_trace(go.Image(z=panel, name="", hovertemplate=safe(full[i]) + "<br>x %{x}, y %{y}<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    # An invisible heatmap carries the colour bar of the relevance scale.
    fig.add_trace(go.Heatmap(
        z=[[-1.0, 1.0]], colorscale=BWR_SCALE, zmin=-1, zmax=1, showscale=True, opacity=0, hoverinfo="skip",
        colorbar=dict(title=dict(text="relevance" + (" (one scale)" if shared_scale else ""), side="right"),
                      tickvals=[-1, 0, 1], ticktext=["−max", "0", "+max"], thickness=12, len=0.9),
        xaxis="x", yaxis="y", visible=True,
    ), row=1, col=1)
    if chosen is not None and 0 <= chosen < len(heatmaps):
        k = chosen + 2  # axis number of the chosen panel (the input is axis 1)
        fig.add_shape(type="rect", xref=f"x{k} domain", yref=f"y{k} domain", x0=-0.03, x1=1.03, y0=-0.03, y1=1.03,
                      line=dict(color="#222222", width=3))
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="", showline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="", showline=False)
    for annotation in fig.layout.annotations:
        annotation.font = dict(size=12)
    size = 230 if cols <= 4 else 180
    return apply_layout(fig, None, height=rows * (size + 45) + 15, margin=dict(l=5, r=5, t=45, b=5))


def sample_grid_figure(images, labels, class_names, per_class=8, seed=0, title=None):
    """A grid of sample images, one row per class, the class name at the left of its row."""
    n_classes = len(class_names)
    grid, row = sample_grid(images, labels, n_classes, per_class, seed)
    fig = go.Figure(go.Image(z=grid, hoverinfo="skip"))
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="")
    fig.update_yaxes(
        tickmode="array",
        ticks="",
        tickvals=[1 + c * row + (row - 1) / 2 for c in range(n_classes)],
        ticktext=[safe(str(name)[:28]) for name in class_names],
        showgrid=False,
        zeroline=False,
    )
    # the montage's aspect ratio at a typical column width (about 560 px), so it is not letterboxed
    height = int(min(900, max(140, 560 * grid.shape[0] / grid.shape[1] + (40 if title else 20))))
    return apply_layout(fig, title, height=height, margin=dict(l=10, r=10, t=30 if title else 10, b=10))
