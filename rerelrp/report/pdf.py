"""The report as a PDF drawn with fpdf2: A4 portrait, no browser, written in one piece.

Tables use fpdf2's own ``table()`` (cells wrap, headings repeat after a page break); what plotly
draws in the HTML report is drawn here with rectangles in the same colours (viridis for the
accuracy matrices, the task colours of :mod:`rerelrp.plots` for the capacity and recognition
bars), and images are PNGs made in memory, enlarged with nearest neighbours so pixels stay sharp.
"""
from __future__ import annotations

import io

import numpy as np

from rerelrp.report import content as text
from rerelrp.report.content import sections
from rerelrp.report.fonts import use_font

ACCENT = (76, 120, 168)
GREY = (217, 217, 217)
BORDER = (210, 210, 210)
HEADING_FILL = (238, 241, 245)
INK = (34, 34, 34)
IMAGE_PX = 160  # images are enlarged to about this many pixels per side


def viridis(value):
    """Colour of an accuracy 0..100 on plotly's viridis (the app's figures' scale), and whether it needs white text."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    x = min(max(float(value) / 100.0, 0.0), 1.0)
    return tuple(round(c) for c in unlabel_rgb(sample_colorscale("Viridis", [x])[0])), x < 0.55


def _png(rgb, enlarge=True):
    """PNG bytes for fpdf2, enlarged with nearest neighbours so that viewers show sharp pixels."""
    from rerelrp.images import encode_png

    scale = max(1, round(IMAGE_PX / max(np.shape(rgb)[:2]))) if enlarge else 1
    return io.BytesIO(encode_png(rgb, scale=scale))


def _pdf_class():
    from fpdf import FPDF

    class ReportPDF(FPDF):
        header_text = ""
        font_name = "helvetica"
        t = None

        def header(self):
            if self.page_no() == 1:
                return
            self.set_font(self.font_name, "", 7.5)
            self.set_text_color(120, 120, 120)
            self.set_xy(self.l_margin, 8)
            self.cell(0, 4, self.t(self.header_text), align="R")
            self.set_draw_color(200, 200, 200)
            self.line(self.l_margin, 13, self.w - self.r_margin, 13)
            self.set_y(17)

        def footer(self):
            self.set_y(-12)
            self.set_font(self.font_name, "", 7.5)
            self.set_text_color(120, 120, 120)
            self.cell(0, 5, self.t(f"rerelrp explanation report · page {self.page_no()}/{{nb}}"), align="C")

    return ReportPDF


class _PdfReport:
    """Draws each section of the content with fpdf2 (A4 portrait, mm): tables, bars and images."""

    def __init__(self, content, font=True):
        from plotly.colors import hex_to_rgb

        from rerelrp.plots import task_colors

        self.c = content
        pdf = self.pdf = _pdf_class()(orientation="P", unit="mm", format="A4")
        pdf.set_margins(15, 17, 15)
        pdf.set_auto_page_break(True, margin=16)
        self.t = pdf.t = use_font(pdf, font)
        pdf.header_text = content["title"]
        pdf.set_title(self.t(content["title"]))
        pdf.set_creator("rerelrp")
        pdf.alias_nb_pages()
        self.W = pdf.w - pdf.l_margin - pdf.r_margin
        self.names = content["task_names"]
        self.colors = [hex_to_rgb(c) for c in task_colors(len(self.names))]

    # ---------------------------------------------------------------- drawing helpers
    def text(self, size=9, style="", color=INK):
        self.pdf.set_font(self.pdf.font_name, style, size)
        self.pdf.set_text_color(*color)

    def heading(self, title):
        pdf = self.pdf
        if pdf.get_y() > pdf.h - 60:
            pdf.add_page()
        pdf.ln(4)
        pdf.start_section(self.t(title))
        self.text(13, "B", ACCENT)
        pdf.cell(0, 8, self.t(title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_draw_color(*ACCENT)
        pdf.set_line_width(0.4)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + self.W, pdf.get_y())
        pdf.set_line_width(0.2)
        pdf.ln(2.5)

    def subheading(self, title, need=18):
        """A bold title, on the next page when less than ``need`` mm are left below it (no orphaned titles)."""
        if self.pdf.get_y() + need > self.pdf.page_break_trigger:
            self.pdf.add_page()
        self.text(10, "B")
        self.pdf.cell(0, 6, self.t(title), new_x="LMARGIN", new_y="NEXT")

    def para(self, s, size=8.5, color=(60, 60, 60), style="", align="J"):
        self.text(size, style, color)
        self.pdf.multi_cell(self.W, size * 0.47, self.t(s), align=align, new_x="LMARGIN", new_y="NEXT")

    def table(self, header, rows, widths, aligns=None, size=7.5, line=4.2, row_fills=None, cell_fills=None):
        """A table with a shaded heading row (fpdf2's table(): cells wrap, headings repeat after a page break).

        ``row_fills``: per body row an RGB fill or None; ``cell_fills``: per body row, per cell an
        ``(rgb, white_text)`` or None (the confusion matrices' shading)."""
        from fpdf.fonts import FontFace

        pdf = self.pdf
        self.text(size, "", INK)
        pdf.set_draw_color(*BORDER)
        pdf.set_fill_color(255, 255, 255)  # body cells take the current fill colour: white, as the page
        with pdf.table(width=min(sum(widths), pdf.epw), col_widths=widths, align="LEFT", text_align=aligns or "LEFT",
                       v_align="TOP", line_height=line, padding=(0.5, 1),
                       headings_style=FontFace(emphasis="BOLD", color=INK, fill_color=HEADING_FILL)) as table:
            table.row([self.t(cell) for cell in header])
            for i, cells in enumerate(rows):
                fill = row_fills[i] if row_fills else None
                row = table.row(style=FontFace(fill_color=fill) if fill else None)
                for j, cell in enumerate(cells):
                    shade = cell_fills[i][j] if cell_fills else None
                    style = FontFace(fill_color=shade[0], color=(255, 255, 255) if shade[1] else INK) if shade else None
                    row.cell(self.t(cell), style=style)
        pdf.ln(2)

    def warnbox(self, title, lines):
        """A shaded box with a red bar: the warnings of one task, each on its own line(s)."""
        pdf, t = self.pdf, self.t
        bullet = "• " if t.ok("•") else "- "
        sign = "⚠ " if t.ok("⚠") else ""
        w, lh = self.W - 6, 3.7
        self.text(7.5)
        height = 6.5 + sum(len(pdf.multi_cell(w, lh, t(bullet + x), dry_run=True, output="LINES")) * lh for x in lines)
        if pdf.get_y() + height > pdf.page_break_trigger and height < pdf.page_break_trigger - pdf.t_margin:
            pdf.add_page()
        y0 = pdf.get_y()
        pdf.set_fill_color(253, 236, 234)
        pdf.rect(pdf.l_margin, y0, self.W, height, style="F")
        pdf.set_fill_color(192, 57, 43)
        pdf.rect(pdf.l_margin, y0, 1.4, height, style="F")
        pdf.set_xy(pdf.l_margin + 4, y0 + 1)
        self.text(8, "B", (150, 40, 30))
        pdf.cell(w, 4.5, t(sign + title), new_x="LMARGIN", new_y="NEXT")
        self.text(7.5, "", (60, 20, 15))
        for x in lines:
            pdf.set_x(pdf.l_margin + 4)
            pdf.multi_cell(w, lh, t(bullet + x), align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(max(pdf.get_y(), y0 + height) + 2)

    def fit(self, s, width):
        """``s`` made printable and cut (with an ellipsis) to ``width`` mm in the current font: cells do not wrap."""
        pdf, s = self.pdf, self.t(s)
        if pdf.get_string_width(s) <= width:
            return s
        dots = "…" if self.t.ok("…") else "..."
        while s and pdf.get_string_width(s + dots) > width:
            s = s[:-1]
        return s.rstrip() + dots

    def image(self, rgb, x, y, size):
        self.pdf.image(_png(rgb), x=x, y=y, w=size, h=size)

    # ---------------------------------------------------------------- sections
    def render(self):
        self.title_block()
        for key, title in sections(self.c):
            self.heading(title)
            getattr(self, key)()
        return bytes(self.pdf.output())

    def title_block(self):
        pdf, c, t = self.pdf, self.c, self.t
        pdf.add_page()
        pdf.set_fill_color(*ACCENT)
        pdf.rect(0, 0, pdf.w, 32, style="F")
        pdf.set_xy(pdf.l_margin, 8)
        self.text(18, "B", (255, 255, 255))
        pdf.cell(self.W, 9, t(c["title"]), new_x="LMARGIN", new_y="NEXT")
        self.text(8.5, "", (230, 236, 245))
        ws = c["workspace"]
        pdf.cell(self.W, 4.5, t("ReReLRP: replay-free continual learning that remembers and recognises tasks with "
                                "layer-wise relevance propagation"), new_x="LMARGIN", new_y="NEXT")
        pdf.cell(self.W, 4.5, t(f"workspace {ws.get('name')} · snapshot {ws.get('snapshot')} saved {ws.get('saved_at')} "
                                f"· report generated {c['generated_at']}"), new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(36)
        for note in c["notes"]:
            self.para("Note: " + note, 8, (140, 100, 0))

    def summary(self):
        pdf, s = self.pdf, self.c["summary"]
        cards = text.cards(s)
        cw, y = (self.W - 3 * (len(cards) - 1)) / len(cards), pdf.get_y()
        for i, (label, value) in enumerate(cards):
            x = pdf.l_margin + i * (cw + 3)
            pdf.set_fill_color(246, 248, 252)
            pdf.set_draw_color(215, 222, 235)
            pdf.rect(x, y, cw, 16, style="DF", round_corners=True, corner_radius=1.5)
            pdf.set_xy(x + 2, y + 1.5)
            self.text(7, "", (100, 100, 100))
            pdf.cell(cw - 4, 4, self.t(label))
            pdf.set_xy(x + 2, y + 6.5)
            self.text(13, "B", (30, 30, 30))
            pdf.cell(cw - 4, 7, self.t(value))
        pdf.set_y(y + 19)
        self.para(f"Final TAw: {s['final_taw']}\nFinal TAg: {s['final_tag']}", 8.5, (30, 30, 30), align="L")
        if s["n_warnings"]:
            self.para(f"{s['n_warnings']} warning(s) about the data or the model: see section "
                      f"'{text.TITLES['data']}'.", 8.5, (192, 57, 43), "B", align="L")
        pdf.ln(1)
        self.para(f"Network {s['net']}, trained on {s['device']}. TAg: task-agnostic accuracy (the model recognises the "
                  "task itself, then the class); TAw: task-aware accuracy (the task is given). Both in % of the test "
                  "images, averaged over tasks.")

    def tasks(self):
        rows = []
        for r in self.c["tasks"]:
            shown, more = text.short_files(r["files"], 2)
            files = "\n".join(f"{f['path']} ({f['bytes']} B)\nsha256 {f['sha256']}" for f in shown)
            files += f"\n... and {more} more file(s)" if more else ""
            if r["test_fingerprint"]:
                files += ("\n" if files else "") + f"test pixels sha256 {r['test_fingerprint']}"
            origin = r["origin"] or r["kind"]
            rows.append([str(r["index"]), r["name"], ", ".join(r["classes"]), r["source"] + (f"\n{origin}" if origin else ""),
                         text.sizes(r), files or "-"])
        self.table(["#", "task", "classes", "source", "train / val / test", "input files and hashes"], rows,
                   [7, 24, 30, 38, 20, self.W - 119], ["R", "L", "L", "L", "C", "L"], size=6.8, line=3.4)

    def comparison(self):
        cmp, W = self.c["comparison"], self.W
        self.para(f"The same task sequence, backbone, settings and evaluation for every method; mean ± sd over seeds "
                  f"{', '.join(map(str, cmp['seeds']))}. Replay and iCaRL keep {cmp['exemplars_per_class']} training "
                  "images per class; ReReLRP keeps relevance rows and no image.")
        widths = [0.15, 0.06, 0.11, 0.11, 0.11, 0.11, 0.08, 0.17, 0.10]
        self.table(cmp["header"], cmp["rows"], [W * w for w in widths], size=6.5)

    def data(self):
        rows = [[str(d["index"]), d["name"], d["split"], d["resolution"], str(len(d["warnings"]))] for d in self.c["data"]]
        self.table(["#", "task", "split", "image size", "warnings"], rows, [7, 30, 68, 60, 15],
                   ["R", "L", "L", "L", "R"], size=7, line=3.6)
        for d in self.c["data"]:
            if d["per_class"]:
                self.subheading(f"Task {d['index']} ({d['name']}): split per class")
                self.table(["class", "split by", "patients", "train / val / test"], [list(r) for r in d["per_class"]],
                           [60, 30, 20, 40], ["L", "L", "R", "R"], size=7, line=3.6)
        quiet = [d for d in self.c["data"] if not d["warnings"]]
        for d in self.c["data"]:
            if d["warnings"]:
                self.warnbox(f"Warnings, task {d['index']} ({d['name']})", d["warnings"])
        if quiet:
            self.para("No warnings: " + ", ".join(f"task {d['index']} ({d['name']})" for d in quiet) + ".", 8, align="L")

    def settings(self):
        ts, W = self.c["task_settings"], self.W
        items = list(ts["run"])
        half = (len(items) + 1) // 2
        left, right = items[:half], items[half:] + [("", "")] * (2 * half - len(items))
        self.subheading("Settings of the whole run (fixed by the first task)" if ts["recorded"]
                        else "Settings when the workspace was saved")
        self.table(["setting", "value", "setting", "value"], [[a, b, c, d] for (a, b), (c, d) in zip(left, right)],
                   [W * 0.22, W * 0.28, W * 0.22, W * 0.28])
        self.subheading("Settings per task")
        if not ts["recorded"]:
            self.para(f"Settings per task: {text.NOT_RECORDED} (this workspace was saved before each task's settings "
                      "were kept); the table above holds the learner's settings when it was saved, which may differ "
                      "from those earlier tasks trained with.", 8, (140, 100, 0))
            return
        self.para("What each task trained with and the schedule that ran: the step floor (min_steps) can run more "
                  "epochs than were set. Shaded rows differ between tasks.", 7.5)
        per_table = 6
        for start in range(0, len(ts["tasks"]), per_table):
            cols = range(start, min(start + per_table, len(ts["tasks"])))
            width = min(28, (W - 48) / len(cols))
            header = ["setting"] + [f"{ts['tasks'][i]}: {text.short_name(self.names[i], 16)}" for i in cols]
            self.table(header, [[r["name"]] + [r["values"][i] for i in cols] for r in ts["rows"]],
                       [48] + [width] * len(cols), ["L"] + ["R"] * len(cols), size=7, line=3.6,
                       row_fills=[(255, 243, 205) if r["differs"] else None for r in ts["rows"]])

    def clinical(self):
        cl, W = self.c["clinical"], self.W
        self.para(f"Final TAw: {cl['final_taw']}\nFinal TAg: {cl['final_tag']}", 8.5, (30, 30, 30), align="L")
        self.para("Measured after the last task on each task's test images. TAw: the task is given and its sub-network "
                  "answers; TAg: the model also recognises the task. Per class: that class against the task's other "
                  "classes (task-aware), proportions 0-1 with 95 % intervals (Wilson, or whole patients resampled where "
                  "the split grouped several images of one patient); AUROC one-vs-rest from the class probabilities, "
                  "with a bootstrap interval. Confusion matrices: counts, rows true class, columns predicted class, "
                  "shaded by the share of the true class.", 7.5)
        for t in cl["tasks"]:
            if self.pdf.get_y() > self.pdf.page_break_trigger - 45:
                self.pdf.add_page()
            self.subheading(f"Task {t['index']}: {t['name']}")
            self.table(["figure", "value"], [["TAw", t["taw"]], ["TAg", t["tag"]],
                                             ["balanced accuracy (TAw)", t["balanced_taw"]], ["intervals", t["ci_unit"]]],
                       [40, W - 40], size=7, line=3.6)
            if t["per_class"]:
                self.per_class(t["per_class"])
            else:
                self.para(f"Per-class figures: {text.NOT_RECORDED}.", 7.5)
            if t["confusion"] and len(t["confusion"]) == len(t["classes"]):
                self.confusion(t["confusion"], t["classes"], "task-aware confusion matrix (counts)")
            else:
                self.para(f"Confusion matrix: {text.NOT_RECORDED}.", 7.5)
        self.subheading("All classes seen (task-agnostic)")
        if cl["tag_confusion"]:
            self.confusion(cl["tag_confusion"], cl["tag_classes"], "task-agnostic confusion matrix (counts)")
        else:
            self.para(f"Task-agnostic confusion matrix: {text.NOT_RECORDED}.", 7.5)

    def per_class(self, rows):
        """The per-class table: class names cut to fit the column, the full names in a legend below."""
        keys = [k for k, _ in text.PER_CLASS_COLUMNS]
        cut = [(text.short_name(r["class"], 24), r["class"]) for r in rows]
        body = [[short] + [str(r[k]) for k in keys[1:]] for (short, _), r in zip(cut, rows)]
        self.table([label for _, label in text.PER_CLASS_COLUMNS], body, [29, 13] + [24.5] * 5 + [12.5],
                   ["L", "R"] + ["R"] * 6, size=6.5, line=3.3)
        long = [full for short, full in cut if short != full]
        if long:
            self.para("Full class names: " + "; ".join(long), 6.8, align="L")

    def confusion(self, matrix, classes, title, per_table=14):
        """Counts of true (rows) against predicted (columns) classes, columns by index, split over several
        tables beyond ``per_table`` classes; the row labels carry the (shortened) names."""
        counts = np.asarray(matrix, dtype=np.int64)
        k = len(classes)
        totals = counts.sum(1)
        labels = [f"{i}: {text.short_name(c, 22)}" for i, c in enumerate(classes)]
        for start in range(0, k, per_table):
            cols = range(start, min(start + per_table, k))
            width = min(14, (self.W - 42) / len(cols))
            fills = []
            for i in range(k):
                row = [None]
                for j in cols:
                    share = counts[i, j] / totals[i] if totals[i] else 0.0
                    rgb = tuple(round(255 + (b - 255) * share) for b in (33, 102, 172))
                    row.append((rgb, share > 0.55) if counts[i, j] else None)
                fills.append(row)
            part = f", predicted classes {cols[0]}-{cols[-1]}" if k > per_table else ""
            self.para(f"{title}{part}: row = true class, column = predicted class (by index)", 7, align="L")
            self.table(["true \\ predicted"] + [str(j) for j in cols],
                       [[labels[i]] + [str(counts[i, j]) for j in cols] for i in range(k)],
                       [42] + [width] * len(cols), ["L"] + ["C"] * len(cols), size=6.5, line=3.3, cell_fills=fills)
        long = [f"{i}: {c}" for i, c in enumerate(classes) if text.short_name(c, 22) != str(c)]
        if long:
            self.para("Full class names: " + "; ".join(long), 6.8, align="L")

    def accuracy(self):
        pdf, acc = self.pdf, self.c["accuracy"]
        if not acc["tag"]:
            self.para("No metrics were saved with this workspace.")
            return
        self.para("Row i: after learning task i; column j: test split of task j (%). Cell colours follow the viridis "
                  "scale of the app's figures.")
        gap, h = 6, 6
        half = (self.W - gap) / 2
        cell = min(15, (half - 16) / max(1, len(self.names)))
        y0 = pdf.get_y() + 1
        if y0 + (len(acc["tag"]) + 2) * h > pdf.page_break_trigger:
            pdf.add_page()
            y0 = pdf.get_y()
        for k, (key, label) in enumerate((("tag", "TAg"), ("taw", "TAw"))):
            self.matrix(acc[key], f"{label} accuracy (%)", pdf.l_margin + k * (half + gap), y0, cell, h)
        pdf.set_y(y0 + 5 + (len(acc["tag"]) + 1) * h + 4)
        self.subheading("Forgetting")
        f, pct = acc["final"], text.pct
        self.table(["", "final accuracy (%)", "forgetting (points)"],
                   [["TAg", pct(f.get("tag")), pct(f.get("forgetting_tag"))],
                    ["TAw", pct(f.get("taw")), pct(f.get("forgetting_taw"))]], [20, 40, 40], ["L", "R", "R"])
        self.para(text.FORGETTING, 7.5)
        if acc["recognized"]:
            last = acc["recognized"][-1]
            pdf.ln(1)
            self.subheading("Task recognition after the last task")
            w = min(28, (self.W - 30) / max(1, len(last)))
            self.table(["task"] + [f"{i}: {n}" for i, n in enumerate(self.names)],
                       [["recognised (%)"] + [pct(v) for v in last]], [30] + [w] * len(last), ["L"] + ["R"] * len(last),
                       size=7)

    def matrix(self, matrix, title, x0, y0, cell, h):
        """A lower-triangular accuracy matrix with viridis cell colours."""
        pdf, t = self.pdf, self.t
        self.text(8.5, "B")
        pdf.set_xy(x0, y0)
        pdf.cell(cell * len(self.names) + 16, 5, t(title))
        self.text(6.5, "B", (90, 90, 90))
        for j in range(len(self.names)):
            pdf.set_xy(x0 + 16 + j * cell, y0 + 5)
            pdf.cell(cell, h, t(f"task {j}"), align="C")
        for i, row in enumerate(matrix):
            y = y0 + 5 + (i + 1) * h
            pdf.set_xy(x0, y)
            self.text(6.5, "B", (90, 90, 90))
            pdf.cell(16, h, t(f"after {i}"))
            for j, value in enumerate(row):
                x = x0 + 16 + j * cell
                rgb, white = viridis(value)
                pdf.set_fill_color(*rgb)
                pdf.set_draw_color(255, 255, 255)
                pdf.rect(x, y, cell, h, style="DF")
                pdf.set_xy(x, y)
                self.text(6.8, "", (255, 255, 255) if white else (20, 20, 20))
                pdf.cell(cell, h, f"{value:.1f}", align="C")

    def capacity(self):
        pdf, t, cap = self.pdf, self.t, self.c["capacity"]
        rows = cap["rows"]
        if not rows:
            self.para("No capacity information.")
            return
        self.para(f"Share of each layer's units first kept (and frozen) by each task, and the free share (grey). The "
                  f"dashed line marks the minimum free share ({cap['min_free']:.0%}) below which a layer grows before the "
                  "next task.")
        label_w, bar_h, gap = 22, 5.2, 2.2
        bar_w = self.W - label_w - 52
        if pdf.get_y() + len(rows) * (bar_h + gap) + 14 > pdf.page_break_trigger:
            pdf.add_page()
        top = y = pdf.get_y() + 1
        x0 = pdf.l_margin + label_w
        for r in rows:
            self.text(7.2, "", (40, 40, 40))
            pdf.set_xy(pdf.l_margin, y)
            pdf.cell(label_w - 1, bar_h, t(r["layer"]), align="R")
            x = x0
            for k, n in enumerate(r["new_by_task"]):
                if n:
                    pdf.set_fill_color(*self.colors[k])
                    pdf.rect(x, y, bar_w * n / r["units"], bar_h, style="F")
                x += bar_w * n / r["units"]
            pdf.set_fill_color(*GREY)
            pdf.rect(x, y, x0 + bar_w - x, bar_h, style="F")
            warn = r["free_share"] < cap["min_free"]
            self.text(6.8, "B" if warn else "", (192, 57, 43) if warn else (70, 70, 70))
            pdf.set_xy(x0 + bar_w + 1.5, y)
            pdf.cell(50, bar_h, t(f"{r['units']} units · free {r['free']} ({r['free_share']:.0%}) · shared {r['shared']}"))
            y += bar_h + gap
        xm = x0 + bar_w * (1 - cap["min_free"])
        pdf.set_draw_color(192, 57, 43)
        pdf.set_dash_pattern(dash=1, gap=1)
        pdf.line(xm, top - 1, xm, y - gap + 1)
        pdf.set_dash_pattern()
        y += 1
        x = x0
        for k, name in enumerate(self.names + ["free"]):
            label = t(f"task {k}: {name}" if k < len(self.names) else "free")
            self.text(6.8, "", (60, 60, 60))
            lw = pdf.get_string_width(label) + 7
            if x + lw > pdf.l_margin + self.W:
                x, y = x0, y + 4.5
            pdf.set_fill_color(*(self.colors[k] if k < len(self.names) else GREY))
            pdf.rect(x, y + 0.8, 3, 3, style="F")
            pdf.set_xy(x + 3.8, y)
            pdf.cell(lw - 4, 4.6, label)
            x += lw
        pdf.set_y(y + 7)
        grown = text.growth(cap["grown"])
        if grown:
            self.para(grown, 7.5)

    def samples(self):
        if not self.c["samples"]:
            self.para("No sample images were chosen for this report.")
            return
        self.para(text.SAMPLES_INTRO)
        for k, smp in enumerate(self.c["samples"]):
            self.sample(k, smp)

    def sample(self, k, smp):
        """Header line; columns: the input, then per sub-network P_T, its class, heatmap and overlay."""
        pdf, t, W = self.pdf, self.t, self.W
        T = len(self.names)
        per_row = min(T, 5)
        col = min(30, (W - 30) / max(1, per_row))
        img = col - 3
        row_h = 14 + 2 * img + 4
        n_rows = (T + per_row - 1) // per_row
        lines = self.sample_lines(smp)
        if pdf.get_y() + 10 + 3.6 * len(lines) + n_rows * row_h > pdf.page_break_trigger:
            pdf.add_page()
        y = pdf.get_y() + 1
        pdf.set_draw_color(215, 222, 235)
        pdf.set_fill_color(246, 248, 252)
        pdf.rect(pdf.l_margin, y, W, 6.5, style="DF")
        pdf.set_xy(pdf.l_margin + 2, y + 0.6)
        self.text(8.5, "B")
        pdf.cell(W - 4, 5.3, self.fit(f"Sample {k + 1}: {smp['origin']}", W - 4))
        pdf.set_xy(pdf.l_margin + 2, y + 7.2)
        for line, color, bold in lines:
            self.text(7.5, "B" if bold else "", color)
            pdf.set_x(pdf.l_margin + 2)
            pdf.multi_cell(W - 4, 3.6, t(line), align="L", new_x="LMARGIN", new_y="NEXT")
        y = pdf.get_y() + 1.5
        x = pdf.l_margin
        self.text(7, "B", (60, 60, 60))
        pdf.set_xy(x, y)
        pdf.cell(28, 3.6, t("input"))
        self.text(6.2, "", (110, 110, 110))
        pdf.set_xy(x, y + 3.8)
        size = smp["input"].shape
        pdf.multi_cell(28, 3, t(f"as the network sees it ({size[0]} x {size[1]} px)"), align="L")
        self.image(smp["input"], x, y + 14, img)
        self.relevance_key(x, y + 14 + img + 1, img)
        for m, sub in enumerate(smp["subnets"]):
            r, c = divmod(m, per_row)
            self.subnet(sub, smp["p_task"][m], m == smp["pred_task"], smp["input"],
                        pdf.l_margin + 30 + c * col, y + r * row_h, img)
        pdf.set_y(y + n_rows * row_h)

    def sample_lines(self, smp):
        """(text, colour, bold) of the lines under a sample's title: its truth, the task-agnostic answer and the
        true task's sub-network, each marked right or WRONG where the truth is known."""
        marks = self.t.ok("✓") and self.t.ok("✗")
        green, red, grey = (46, 125, 50), (192, 57, 43), (60, 60, 60)
        lines = []
        if smp["true_task"] is not None:
            lines.append((f"true: task {smp['true_task']} ({self.names[smp['true_task']]}), class {smp['true_class']}",
                          grey, False))
        scope = f"NONE OF THE LEARNED TASKS ({text.scope_reason(smp)}); closest guess: " if smp["out_of_scope"] else ""
        score = "" if smp["out_of_scope"] or smp["scope_score"] != smp["scope_score"] else \
            f" · scope score {smp['scope_score']:.2f}"
        answer = f"task-agnostic answer: {scope}task {smp['pred_task']} ({self.names[smp['pred_task']]}), class " \
                 f"{smp['pred_class']}{score}"
        v = smp.get("tag_verdict")
        if v:
            answer += "  " + text.verdict(v, marks, shout=True)
        lines.append((answer, red if smp["out_of_scope"] or (v and not v["right"]) else green if v else grey,
                      bool(smp["out_of_scope"] or (v and not v["right"]))))
        v = smp.get("taw_verdict")
        if v:
            lines.append((f"sub-network of the true task {v['task']}: class {v['class']}  "
                          + text.verdict(v, marks, shout=True), green if v["right"] else red, not v["right"]))
        if smp.get("modality"):
            lines.append((f"DICOM modality {smp['modality']}", grey, False))
        return lines

    def subnet(self, sub, p, chosen, image, x, y, img):
        from rerelrp.plots import heatmap_rgb

        pdf, t, m = self.pdf, self.t, sub["task"]
        self.text(6.8, "B", (30, 30, 30))
        pdf.set_xy(x, y)
        pdf.cell(img, 3.6, self.fit(f"sub-net {m}: {sub['task_name']}", img))
        self.text(6.4, "B" if chosen else "", (30, 30, 30))
        pdf.set_xy(x, y + 3.8)
        pdf.cell(img, 3.2, t(f"P_T = {p:.2f}"))
        pdf.set_fill_color(235, 235, 235)
        pdf.rect(x, y + 7.3, img, 2, style="F")
        if p > 0:
            pdf.set_fill_color(*self.colors[m])
            pdf.rect(x, y + 7.3, img * p, 2, style="F")
        if chosen:
            pdf.set_draw_color(30, 30, 30)
            pdf.rect(x, y + 7.3, img, 2, style="D")
        self.text(6.4, "", (50, 50, 50))
        pdf.set_xy(x, y + 10)
        prob = f" (p {sub['prob']:.2f})"
        pdf.cell(img, 3.2, self.fit(f"predicts {sub['class']}", img - pdf.get_string_width(prob)) + prob)
        self.image(heatmap_rgb(sub["heatmap"]), x, y + 14, img)
        self.image(heatmap_rgb(sub["heatmap"], image, overlay=True), x, y + 14 + img + 1, img)

    def relevance_key(self, x, y, w):
        """What the two image rows show, and the colour key of relevance, under the input."""
        from rerelrp.plots import heatmap_rgb

        pdf, t = self.pdf, self.t
        self.text(6.2, "", (110, 110, 110))
        pdf.set_xy(x, y)
        pdf.multi_cell(w, 2.9, t("above: relevance heatmap\nbelow: heatmap over the input\n\nrelevance colour key"),
                       align="L")
        key = np.linspace(-1, 1, 101)[None, :].repeat(6, 0)
        pdf.image(_png(heatmap_rgb(key), enlarge=False), x=x, y=pdf.get_y() + 0.5, w=w, h=3)
        pdf.set_xy(x, pdf.get_y() + 3.8)
        for label, align in (("-max", "L"), ("0", "C"), ("+max", "R")):
            pdf.cell(w / 3, 3, t(label), align=align)

    def software(self):
        W, sw = self.W, self.c["software"]
        self.table(["package", "saved with", "report made with"], [list(v) for v in text.versions(sw)],
                   [W * 0.22, W * 0.39, W * 0.39], size=7)
        self.table(["seed / setting", "value"], [list(v) for v in text.seeds(sw)], [W * 0.4, W * 0.6], size=7)

    def privacy(self):
        pv = self.c["privacy"]
        self.para("The workspace stores:", 8.5, (30, 30, 30), "B")
        for x in pv["stored"]:
            self.para("•  " + x, 8, align="L")
        self.pdf.ln(1)
        self.para("It does not store:", 8.5, (30, 30, 30), "B")
        for x in pv["not_stored"]:
            self.para("•  " + x, 8, align="L")
        self.pdf.ln(1)
        self.para("This report: " + pv["report"] + ". The PDF was made without a browser and written in one piece; no "
                  "image was written anywhere else.", 8, (30, 30, 30))


def render_pdf(content, font=True):
    """The report as PDF bytes (fpdf2, no browser). ``font=False`` forces latin-1 core fonts."""
    return _PdfReport(content, font).render()
