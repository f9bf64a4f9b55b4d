"""Charts the PDF report draws with fpdf2's lines and circles (the HTML report embeds the plotly figures).

Drawn, not rasterised: a plotly PNG needs kaleido and a browser at report time, and vector lines
stay sharp when printed. Only what a table cannot show well is drawn here.
"""
from __future__ import annotations

import math

import numpy as np
from plotly.colors import hex_to_rgb

from rerelrp.figures.plots import task_colors

AXIS = (120, 120, 120)
GRID = (232, 232, 232)


def memory_chart(layout, memory, width=120.0, height=58.0):
    """Final TAg (mean ± sd over seeds) against bytes stored on a log axis, one colour per method, as
    :func:`rerelrp.figures.plots.memory_figure`; methods that keep nothing are dotted lines at their TAg.
    ``memory`` is the comparison block's ``memory`` (:func:`rerelrp.report.content.comparison_block`)."""
    pdf = layout.pdf
    methods = [m for m in memory["methods"] if any(r["method"] == m for r in memory["runs"])]
    colors = dict(zip(memory["methods"], (hex_to_rgb(c) for c in task_colors(len(memory["methods"])))))
    points = {m: (np.array([r["bytes_stored"] for r in memory["runs"] if r["method"] == m], float),
                  np.array([r["final"]["tag"] for r in memory["runs"] if r["method"] == m], float)) for m in methods}
    stored = np.concatenate([b[b > 0] for b, _ in points.values()] or [np.zeros(0)])
    if pdf.get_y() + height + 16 > pdf.page_break_trigger:
        pdf.add_page()
    x0, y0 = pdf.l_margin + 12, pdf.get_y() + 4
    lo, hi = (math.floor(math.log10(stored.min())), math.ceil(math.log10(stored.max()))) if len(stored) else (0, 1)
    hi = max(hi, lo + 1)
    px = (lambda b: x0 + width * (math.log10(b) - lo) / (hi - lo))
    py = (lambda tag: y0 + height * (1 - tag / 100.0))
    layout.text(6.5, color=AXIS)
    pdf.set_line_width(0.15)
    for tag in range(0, 101, 20):
        pdf.set_draw_color(*GRID)
        pdf.line(x0, py(tag), x0 + width, py(tag))
        pdf.set_xy(x0 - 11, py(tag) - 1.5)
        pdf.cell(10, 3, str(tag), align="R")
    for decade in range(lo, hi + 1):
        pdf.line(px(10 ** decade), y0, px(10 ** decade), y0 + height)
        pdf.set_xy(px(10 ** decade) - 8, y0 + height + 0.8)
        pdf.cell(16, 3, _bytes(10 ** decade), align="C")
    pdf.set_draw_color(*AXIS)
    pdf.rect(x0, y0, width, height)
    pdf.set_xy(x0, y0 + height + 4)
    pdf.cell(width, 3, "bytes stored (log scale)", align="C")
    legend_y = y0
    for m in methods:
        b, tag = points[m]
        color, sd = colors[m], (tag.std(ddof=1) if len(tag) > 1 else 0.0)
        pdf.set_draw_color(*color)
        pdf.set_fill_color(*color)
        if b.max() <= 0:
            pdf.set_dash_pattern(dash=0.8, gap=0.8)
            pdf.line(x0, py(tag.mean()), x0 + width, py(tag.mean()))
            pdf.set_dash_pattern()
            label = f"{m} (keeps nothing)"
        else:
            cx, cy = px(b.mean()), py(tag.mean())
            pdf.set_line_width(0.3)
            pdf.line(cx, py(tag.mean() + sd), cx, py(tag.mean() - sd))
            pdf.circle(cx, cy, 1.1, style="F")  # fpdf2 >= 2.8.1: x, y is the centre
            label = m
        pdf.rect(x0 + width + 4, legend_y + 0.6, 2, 2, style="F")
        layout.text(6.5)
        pdf.set_xy(x0 + width + 7, legend_y)
        pdf.cell(layout.W - width - 19, 3.2, layout.fit(label, layout.W - width - 19))
        legend_y += 3.6
        layout.text(6.5, color=AXIS)
    pdf.set_line_width(0.2)
    pdf.set_xy(pdf.l_margin, y0 + height + 9)
    layout.para("Final TAg against the bytes each method keeps: the mean over seeds, the bar ± 1 sd.", 7.5)


def _bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n:g} B"
