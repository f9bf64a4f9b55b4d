"""Plotly figures of a ReReLRP run: pure functions, data in, figure out.

The app shows them with ``st.plotly_chart`` and the reports embed the same figures, so nothing
here knows about Streamlit. Colours are shared: task ``i`` has ``task_colors(n)[i]`` in every
figure, free capacity is light grey, and relevance uses a diverging blue-white-red map centred
at zero (blue: negative evidence, red: positive evidence), drawn by :mod:`rerelrp.figures.display_images`.
"""
from __future__ import annotations

import colorsys
import html

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from rerelrp.text import printable

# Tableau-like qualitative colours without grey (grey means "free capacity").
_PALETTE = (
    "#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2",
    "#EECA3B", "#9D755D", "#FF9DA6", "#2F4B7C", "#A0CBE8", "#8CD17D",
)
FREE_COLOR = "#D9D9D9"
WARN_COLOR = "#C0392B"
PHASE_COLORS = {
    "train": "#4C78A8",
    "relevance": "#F58518",
    "prune": "#54A24B",
    "recognizer": "#B279A2",
    "eval": "#9D9D9D",
}
# matplotlib's "bwr": blue (-1) -> white (0) -> red (+1), linear in RGB.
BWR_SCALE = [[0.0, "rgb(0,0,255)"], [0.5, "rgb(255,255,255)"], [1.0, "rgb(255,0,0)"]]
FONT = dict(family="sans-serif", size=13)
TICK_CHARS = 26  # a task name on an axis or in a legend; the hover has the whole name


def task_colors(n):
    """``n`` distinct colours, task ``i`` always gets the ``i``-th (the same list prefix for any n)."""
    out = list(_PALETTE[: max(0, n)])
    k = len(_PALETTE)
    while len(out) < n:  # beyond the palette: golden-angle hues, alternating lightness
        i = len(out) - k
        hue = (0.11 + i * 0.381966) % 1.0
        r, g, b = colorsys.hls_to_rgb(hue, 0.45 if i % 2 else 0.6, 0.65)
        out.append(f"#{round(r * 255):02X}{round(g * 255):02X}{round(b * 255):02X}")
    return out


def safe(text):
    """A user-derived name as plotly text: plotly reads <a>, <span style> and entities in titles, ticks and hovers."""
    return html.escape(printable(text), quote=False)


def short(text, width=TICK_CHARS):
    """``text`` cut to at most ``width`` characters, at a word where one is near, with an ellipsis."""
    text = printable(text)
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut[width // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-(") + "…"


def task_labels(task_names, width=TICK_CHARS):
    """Unique axis and legend labels ``"0: name"``, names cut to ``width`` (two tasks may share a data set's name)."""
    return [f"{i}: {safe(short(name, width))}" for i, name in enumerate(task_names)]


def full_labels(task_names):
    """``"0: name"`` with the whole name, for hovers (axes and legends show :func:`task_labels`)."""
    return [f"{i}: {safe(name)}" for i, name in enumerate(task_names)]


def apply_layout(fig, title=None, height=None, margin=None, **extra):
    fig.update_layout(
        title=dict(text=safe(title), x=0.0, xanchor="left") if title else None,
        margin=margin or dict(l=10, r=10, t=50 if title else 20, b=10),
        font=FONT,
        plot_bgcolor="white",
        paper_bgcolor="white",
        **({"height": height} if height else {}),
        **extra,
    )
    return fig


# ------------------------------------------------------------------------------- accuracy
def lower_triangle(matrix):
    """Rows of growing length (row i holds tasks 0..i) as a square float array, NaN above the diagonal."""
    if isinstance(matrix, np.ndarray) and matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1]:
        out = matrix.astype(float).copy()
        out[np.triu_indices(len(out), 1)] = np.nan
        return out
    rows = [list(r) for r in matrix]
    n = max([len(rows)] + [len(r) for r in rows]) if rows else 0
    out = np.full((len(rows), n), np.nan)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def accuracy_matrix_figure(matrix, task_names, title="Accuracy (%)"):
    """Lower-triangular heatmap: row i after learning task i, column j tested on task j (0-100)."""
    z = lower_triangle(matrix)
    n_rows, n_cols = z.shape if z.size else (0, len(task_names))
    many = max(n_rows, n_cols) > 5  # then the cells are small: shorter labels, whole numbers
    labels, full = task_labels(task_names, 16 if many else TICK_CHARS), full_labels(task_names)
    cols = labels[:n_cols] + [f"{j}" for j in range(len(labels), n_cols)]
    rows = [f"after {c}" for c in cols[:n_rows]] + [f"after {i}" for i in range(len(cols), n_rows)]
    names = full[: max(n_rows, n_cols)] + [f"{j}" for j in range(len(full), max(n_rows, n_cols))]
    hover = [[[names[i], names[j]] for j in range(n_cols)] for i in range(n_rows)]
    digits = "{:.0f}" if many else "{:.1f}"
    text = np.where(np.isnan(z), "", np.vectorize(digits.format)(np.nan_to_num(z))) if z.size else z
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=rows,
            text=text,
            texttemplate="%{text}",
            textfont=dict(size=10 if many else 12),
            zmin=0,
            zmax=100,
            colorscale="Viridis",
            colorbar=dict(title=dict(text="%"), thickness=12),
            customdata=hover if z.size else None,
            hovertemplate="after %{customdata[0]}<br>tested on %{customdata[1]}<br>%{z:.2f} %<extra></extra>",
            xgap=2,
            ygap=2,
        )
    )
    fig.update_yaxes(autorange="reversed")  # the row labels say "after <task>"
    fig.update_xaxes(title_text="tested on", side="bottom", tickangle=-35 if n_cols > 4 else 0)
    return apply_layout(fig, title, height=max(260, 90 + 42 * max(1, n_rows)))


def train_curve_figure(curve, title="Training"):
    """Loss (left axis) and train/validation accuracy (right axis) per epoch of one task."""
    epochs = [c["epoch"] for c in curve]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=epochs, y=[c.get("loss") for c in curve], name="loss", mode="lines+markers",
                             line=dict(color="#555555")), secondary_y=False)
    fig.add_trace(go.Scatter(x=epochs, y=[c.get("train_acc") for c in curve], name="train acc", mode="lines+markers",
                             line=dict(color=_PALETTE[0])), secondary_y=True)
    fig.add_trace(go.Scatter(x=epochs, y=[c.get("val_acc") for c in curve], name="val acc", mode="lines+markers",
                             line=dict(color=_PALETTE[1])), secondary_y=True)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="loss", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="accuracy (%)", secondary_y=True, range=[0, 100])
    return apply_layout(fig, title, height=280, legend=dict(orientation="h", y=-0.3))


def timings_figure(seconds_per_task, task_names=None, title="Time per phase (s)"):
    """Stacked bars of phase seconds (train, relevance, prune, recognizer, eval) per task."""
    n = len(seconds_per_task)
    labels = task_labels(task_names) if task_names else [str(i) for i in range(n)]
    labels = labels[:n] + [str(i) for i in range(len(labels), n)]
    phases = [p for p in PHASE_COLORS if any(p in s for s in seconds_per_task)]
    phases += sorted({k for s in seconds_per_task for k in s} - set(phases))
    fig = go.Figure()
    for phase in phases:
        fig.add_trace(go.Bar(
            x=labels,
            y=[float(s.get(phase, 0.0)) for s in seconds_per_task],
            name=phase,
            marker_color=PHASE_COLORS.get(phase, "#777777"),
            hovertemplate=f"{phase}: " + "%{y:.1f} s<extra>%{x}</extra>",
        ))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="seconds", gridcolor="#EEEEEE")
    fig.update_xaxes(title_text="task", type="category", tickangle=-35 if n > 4 else 0)
    return apply_layout(fig, title, height=300 if n <= 4 else 360)  # the legend at the right, clear of long task ticks


# ------------------------------------------------------------------------------- capacity
def capacity_figure(capacity_rows, task_names, min_free=None, title="Capacity per layer"):
    """Per layer, one stacked bar (share of the layer's units): units each task froze first, then free.

    Layers whose free share is below ``min_free`` (or flagged ``warning`` when no threshold is
    given) get a red warning mark; every bar is annotated with its shared and free unit counts.
    """
    rows = list(capacity_rows)
    layers = [r["layer"] for r in rows]
    n_tasks = max([len(task_names)] + [len(r.get("new_by_task", [])) for r in rows])
    colors = task_colors(n_tasks)
    labels = task_labels(task_names) + [str(i) for i in range(len(task_names), n_tasks)]
    full = full_labels(task_names) + [str(i) for i in range(len(task_names), n_tasks)]
    fig = go.Figure()
    for t in range(n_tasks):
        counts = [r["new_by_task"][t] if t < len(r.get("new_by_task", [])) else 0 for r in rows]
        kept = [r["kept_by_task"][t] if t < len(r.get("kept_by_task", [])) else 0 for r in rows]
        fig.add_trace(go.Bar(
            y=layers,
            x=[100.0 * c / r["units"] for c, r in zip(counts, rows)],
            orientation="h",
            name=f"task {labels[t]}",
            marker_color=colors[t],
            customdata=np.stack([counts, kept, [r["units"] for r in rows]], axis=1) if rows else None,
            hovertemplate="%{y}: %{customdata[0]} of %{customdata[2]} units first kept by task "
                          + full[t] + " (it uses %{customdata[1]})<extra></extra>",
        ))
    fig.add_trace(go.Bar(
        y=layers,
        x=[100.0 * r["free"] / r["units"] for r in rows],
        orientation="h",
        name="free",
        marker_color=FREE_COLOR,
        customdata=np.stack([[r["free"] for r in rows], [r["units"] for r in rows]], axis=1) if rows else None,
        hovertemplate="%{y}: %{customdata[0]} of %{customdata[1]} units free<extra></extra>",
    ))
    warned = []
    for r in rows:
        low = (r["free_share"] < min_free) if min_free is not None else bool(r.get("warning"))
        warned.append(low)
        fig.add_annotation(
            x=100, y=r["layer"], xref="x", yref="y", xanchor="left", showarrow=False,
            text=(("⚠ " if low else "") + f"free {r['free']}/{r['units']} · shared {r['shared']}"),
            font=dict(color=WARN_COLOR if low else "#444444", size=12),
        )
    if min_free is not None and rows:
        fig.add_vline(x=100.0 * (1.0 - min_free), line=dict(color=WARN_COLOR, dash="dash", width=1),
                      annotation_text=f"min free {min_free:.0%}", annotation_position="top",
                      annotation_font=dict(color=WARN_COLOR, size=11))
    fig.update_layout(barmode="stack", bargap=0.25)
    fig.update_xaxes(range=[0, 100], ticksuffix=" %", gridcolor="#EEEEEE")  # no axis title: the legend sits below
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=layers)
    fig = apply_layout(fig, title, height=max(260, 110 + 34 * len(rows)),
                  legend=dict(orientation="h", y=-0.18, traceorder="normal"))
    fig.update_layout(margin=dict(r=190))
    fig.layout.meta = {"warned_layers": [layer for layer, w in zip(layers, warned) if w]}
    return fig


def capacity_history_figure(capacity_per_task, task_names, min_free=None, title="Free share after each task"):
    """Free share (%) of every layer after each task: one line per layer."""
    labels = task_labels(task_names)[: len(capacity_per_task)]
    labels += [str(i) for i in range(len(labels), len(capacity_per_task))]
    layers = []
    for rows in capacity_per_task:
        for r in rows:
            if r["layer"] not in layers:
                layers.append(r["layer"])
    fig = go.Figure()
    # layers get shades of one sequential scale (first layer dark), so they never look like tasks
    shades = sample_colorscale("Cividis", [i / max(1, len(layers) - 1) * 0.85 for i in range(len(layers))])
    for layer, color in zip(layers, shades):
        y = []
        for rows in capacity_per_task:
            match = [r for r in rows if r["layer"] == layer]
            y.append(100.0 * match[0]["free_share"] if match else None)
        fig.add_trace(go.Scatter(x=labels, y=y, name=layer, mode="lines+markers", line=dict(color=color),
                                 hovertemplate=f"{layer}" + " after %{x}: %{y:.1f} % free<extra></extra>"))
    if min_free is not None:
        fig.add_hline(y=100.0 * min_free, line=dict(color=WARN_COLOR, dash="dash", width=1),
                      annotation_text=f"min free {min_free:.0%}", annotation_position="top left",
                      annotation_font=dict(color=WARN_COLOR, size=11))
    fig.update_yaxes(range=[0, 100], title_text="free units (%)", gridcolor="#EEEEEE")
    fig.update_xaxes(title_text="after learning task", type="category")
    return apply_layout(fig, title, height=320)


# ---------------------------------------------------------------------------- recognition
def recognition_figure(p_task, task_names, title="Task recognition P_T"):
    """Bar chart of the chain's P_T for one image; the chosen task is drawn solid, the others faded."""
    p = np.asarray(p_task, dtype=float).reshape(-1)
    labels = task_labels(task_names)[: len(p)] + [str(i) for i in range(len(task_names), len(p))]
    full = full_labels(task_names)[: len(p)] + [str(i) for i in range(len(task_names), len(p))]
    colors = task_colors(len(p))
    best = int(np.argmax(p)) if len(p) else -1
    fig = go.Figure(go.Bar(
        x=labels,
        y=p,
        marker=dict(color=colors, opacity=[1.0 if i == best else 0.45 for i in range(len(p))],
                    line=dict(color=["#222222" if i == best else "rgba(0,0,0,0)" for i in range(len(p))], width=2)),
        text=[f"{v:.2f}" for v in p],
        textposition="outside",
        customdata=full,
        hovertemplate="%{customdata}: P_T = %{y:.3f}<extra></extra>",
    ))
    fig.update_yaxes(range=[0, 1.12], title_text="P_T", gridcolor="#EEEEEE")
    fig.update_xaxes(type="category", tickangle=-35 if len(p) > 4 else 0)
    return apply_layout(fig, title, height=300, showlegend=False)


def comparison_figure(result, title="TAg after each task (mean ± sd over seeds)"):
    """Task-agnostic accuracy after each task, one line per method of a comparison (:mod:`rerelrp.run.compare`)."""
    fig = go.Figure()
    colors = task_colors(len(result["methods"]))
    for color, method in zip(colors, result["methods"]):
        curves = np.array([r["tag_after_each_task"] for r in result["runs"] if r["method"] == method], dtype=float)
        if not len(curves):
            continue
        sd = curves.std(0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
        fig.add_trace(go.Scatter(x=list(range(1, curves.shape[1] + 1)), y=curves.mean(0), name=method, mode="lines+markers",
                                 line={"color": color, "dash": "solid" if method.startswith("rerelrp") else "dot"},
                                 error_y={"type": "data", "array": sd, "visible": len(curves) > 1}))
    apply_layout(fig, title, height=380, xaxis_title="tasks learned", yaxis_title="TAg (%)", yaxis_range=[0, 100],
            showlegend=True, legend=dict(title=dict(text="method")))  # also for one method: the line is named
    fig.update_xaxes(dtick=1)
    return fig


def memory_figure(result, title="Final TAg against the bytes each method keeps"):
    """What each method of a comparison buys with what it keeps: final TAg (mean ± sd over seeds) against
    the bytes stored (images for replay and iCaRL, the recognition store for ReReLRP), log axis.

    Methods that keep nothing per task (fine-tuning, EWC, LwF, joint's bound) cannot sit on a log axis:
    they are dotted lines at their TAg, named at the right."""
    fig = go.Figure()
    colors = task_colors(len(result["methods"]))
    for color, method in zip(colors, result["methods"]):
        runs = [r for r in result["runs"] if r["method"] == method]
        if not runs:
            continue
        name = safe(method)
        tag = np.array([r["final"]["tag"] for r in runs], dtype=float)
        stored = np.array([r["bytes_stored"] for r in runs], dtype=float)
        sd = (lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        if stored.max() <= 0:
            fig.add_hline(y=float(tag.mean()), line={"color": color, "dash": "dot", "width": 1.5},
                          annotation_text=f"{name} (keeps nothing)", annotation_position="right",
                          annotation_font={"color": color, "size": 11})
            continue
        hover = "%{text}<br>%{x:,.0f} bytes<br>TAg %{y:.2f} %<extra></extra>"
        fig.add_trace(go.Scatter(x=stored, y=tag, mode="markers", marker={"color": color, "size": 6, "opacity": 0.45},
                                 showlegend=False, text=[f"{name}, seed {r['seed']}" for r in runs], hovertemplate=hover))
        fig.add_trace(go.Scatter(x=[stored.mean()], y=[tag.mean()], mode="markers", name=name,
                                 marker={"color": color, "size": 12,
                                         "symbol": "diamond" if method.startswith("rerelrp") else "circle"},
                                 error_y={"type": "data", "array": [sd(tag)], "visible": len(runs) > 1},
                                 error_x={"type": "data", "array": [sd(stored)], "visible": len(runs) > 1},
                                 text=[f"{name}, mean of {len(runs)} seed(s)"], hovertemplate=hover))
    apply_layout(fig, title, height=400, xaxis_title="bytes stored (log scale)", yaxis_title="final TAg (%)",
                 yaxis_range=[0, 100], showlegend=True, legend=dict(title=dict(text="method")),
                 margin=dict(l=60, r=150, t=50, b=50))
    fig.update_xaxes(type="log", dtick="D2", showgrid=True, gridcolor="#EEEEEE")  # ticks at 1, 2, 5 of each decade
    fig.update_yaxes(showgrid=True, gridcolor="#EEEEEE")
    return fig


# ------------------------------------------------------------------------------- clinical
def confusion_heatmap(matrix, class_names, title="Confusion matrix"):
    """Counts of true (rows) against predicted (columns) classes, each cell written as its count and
    coloured by its share of the true class (a rare class stays readable). Margins follow the label
    lengths; repeated names (``normal`` of two tasks) get their index so that no two rows merge."""
    counts = np.asarray(matrix, dtype=np.int64).reshape(len(class_names), len(class_names))
    labels = [safe(short(c, 2 * TICK_CHARS)) for c in class_names]
    if len(set(labels)) < len(labels):
        labels = [f"{i}: {c}" for i, c in enumerate(labels)]
    totals = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, 100.0 * counts / totals, np.nan)
    longest = max((len(c) for c in labels), default=1)
    angled = longest > 8 and len(labels) > 2
    k = max(1, len(labels))
    fig = go.Figure(
        go.Heatmap(
            z=share, x=labels, y=labels, text=counts.astype(str), texttemplate="%{text}",
            textfont=dict(size=12 if k <= 10 else 9), zmin=0, zmax=100, colorscale="Blues",
            colorbar=dict(title=dict(text="% of true"), thickness=12),
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text} images (%{z:.1f} % of the true class)<extra></extra>",
            xgap=1, ygap=1,
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="true class", type="category")
    fig.update_xaxes(title_text="predicted class", type="category", tickangle=-45 if angled else 0)
    left = min(320, 30 + 7 * longest)
    bottom = min(260, 50 + (5 * longest if angled else 0))
    top = 50 if title else 20
    return apply_layout(fig, title, height=max(260, top + bottom + 36 * k),
                   margin=dict(l=left, r=10, t=top, b=bottom))


def reliability_figure(rel, title="Is P_T a probability? Reliability on validation images"):
    """Share of images whose task was recognised against their mean largest P_T, per bin, with the diagonal."""
    used = rel.counts > 0
    mid = (rel.edges[:-1] + rel.edges[1:]) / 2
    low = [rel.accuracy[i] - rel.intervals[i][0] for i in np.flatnonzero(used)]
    high = [rel.intervals[i][1] - rel.accuracy[i] for i in np.flatnonzero(used)]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=mid[used], y=100 * rel.accuracy[used], width=0.9 / len(mid), name="recognised (%)",
                         marker_color=_PALETTE[0], customdata=np.stack([rel.counts[used], 100 * rel.confidence[used]], 1),
                         error_y=dict(type="data", symmetric=False, array=100 * np.array(high),
                                      arrayminus=100 * np.array(low), color="#555555"),
                         hovertemplate="P_T %{x:.2f}: %{y:.1f} % recognised of %{customdata[0]} images "
                                       "(mean P_T %{customdata[1]:.1f} %)<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 100], mode="lines", name="P_T as a probability",
                             line=dict(color=WARN_COLOR, dash="dash")))
    fig.update_xaxes(range=[0, 1], title_text="largest P_T of the image", dtick=0.1)
    fig.update_yaxes(range=[0, 105], title_text="task recognised (%)", gridcolor="#EEEEEE")
    return apply_layout(fig, title, height=340, legend=dict(orientation="h", y=-0.3))
