"""The report as a PDF drawn with fpdf2: A4 portrait, no browser, written in one piece.

Tables use fpdf2's own ``table()`` (cells wrap, headings repeat after a page break); what plotly
draws in the HTML report is drawn here with rectangles in the same colours (viridis for the
accuracy matrices, the task colours of :mod:`rerelrp.figures.plots` for the capacity and recognition
bars). This module draws the sections; the primitives are in :mod:`.pdf_layout`, the samples in
:mod:`.pdf_samples`.
"""
from __future__ import annotations

import numpy as np
from plotly.colors import sample_colorscale, unlabel_rgb

import rerelrp.report.content as text
from rerelrp.report.content import sections
from rerelrp.report.pdf_charts import memory_chart
from rerelrp.report.pdf_layout import ACCENT
from rerelrp.report.pdf_samples import SampleDrawing
from rerelrp.report.study import NOT_RECORDED, PER_CLASS_COLUMNS

GREY = (217, 217, 217)  # free capacity, as in the app's figures


def viridis(value):
    """Colour of an accuracy 0..100 on plotly's viridis (the app's figures' scale), and whether it needs white text."""
    x = min(max(float(value) / 100.0, 0.0), 1.0)
    return tuple(round(c) for c in unlabel_rgb(sample_colorscale("Viridis", [x])[0])), x < 0.55


class _PdfReport(SampleDrawing):
    """Draws each section of the content with fpdf2 (A4 portrait, mm): tables, bars and images."""

    def __init__(self, content, font=True):
        self.c = content
        super().__init__(content["title"], content["task_names"], font)

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
            rows.append([str(r["index"]), r["name"], " | ".join(r["classes"]), r["source"] + (f"\n{origin}" if origin else ""),
                         text.sizes(r), files or "-"])
        self.table(["#", "task", "classes", "source", "train / val / test", "input files and hashes"], rows,
                   [7, 24, 30, 38, 20, self.W - 119], ["R", "L", "L", "L", "C", "L"], size=6.8, line=3.4)
        if self.c.get("task_notes"):
            self.subheading("Notes on the tasks")
            for i, name, note in self.c["task_notes"]:
                self.para(f"Task {i} ({name}): {note}")

    def comparison(self):
        cmp, W = self.c["comparison"], self.W
        self.para(f"The same task sequence, backbone, settings and evaluation for every method; mean ± sd over seeds "
                  f"{', '.join(map(str, cmp['seeds']))}. Replay and iCaRL keep a fixed memory of "
                  f"{cmp['exemplars_per_class']} training images per class of the sequence, shared among the classes "
                  "seen so far; ReReLRP keeps no image: its recognition store holds class statistics (or, with the "
                  "paper's forests, relevance rows).")
        widths = [0.15, 0.06, 0.11, 0.11, 0.11, 0.11, 0.08, 0.17, 0.10]
        self.table(cmp["header"], cmp["rows"], [W * w for w in widths], size=6.5)
        memory_chart(self, cmp["memory"])

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
            self.para(f"Settings per task: {NOT_RECORDED} (this workspace was saved before each task's settings "
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
                self.para(f"Per-class figures: {NOT_RECORDED}.", 7.5)
            if t["confusion"] and len(t["confusion"]) == len(t["classes"]):
                self.confusion(t["confusion"], t["classes"], "task-aware confusion matrix (counts)")
            else:
                self.para(f"Confusion matrix: {NOT_RECORDED}.", 7.5)
        k = len(cl["tag_classes"])
        self.subheading("All classes seen (task-agnostic)", need=min(14 + (k + 1) * 4.4, 120) if k <= 14 else 40)
        if cl["tag_confusion"]:
            self.confusion(cl["tag_confusion"], cl["tag_classes"], "task-agnostic confusion matrix (counts)")
        else:
            self.para(f"Task-agnostic confusion matrix: {NOT_RECORDED}.", 7.5)

    def per_class(self, rows):
        """The per-class table: class names cut to fit the column, the full names in a legend below."""
        keys = [k for k, _ in PER_CLASS_COLUMNS]
        cut = [(text.short_name(r["class"], 24), r["class"]) for r in rows]
        body = [[short] + [str(r[k]) for k in keys[1:]] for (short, _), r in zip(cut, rows)]
        self.table([label for _, label in PER_CLASS_COLUMNS], body, [29, 13] + [24.5] * 5 + [12.5],
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
            height = 8 + (k + 1) * 4.4  # keep a matrix on one page when it fits on one
            if self.pdf.get_y() + height > self.pdf.page_break_trigger and height < self.pdf.page_break_trigger - 20:
                self.pdf.add_page()
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
        grown = text.growth(cap["grown"], cap.get("room", ()))
        if grown:
            self.para(grown, 7.5)

    def samples(self):
        if not self.c["samples"]:
            self.para("No sample images were chosen for this report.")
            return
        self.para(f"{text.SAMPLES_INTRO} {self.c['p_task_calibration']}")
        for k, smp in enumerate(self.c["samples"]):
            self.sample(k, smp)

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
