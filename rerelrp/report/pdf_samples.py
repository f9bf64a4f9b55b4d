"""The samples of the PDF report: per image its truth, the answer (right or WRONG), the input as the
network sees it and, per sub-network, P_T, its class, its relevance heatmap and the overlay.
"""
from __future__ import annotations

import numpy as np

from rerelrp.figures.display_images import heatmap_rgb
from rerelrp.report.pdf_layout import PdfLayout, png
from rerelrp.report.samples import scope_reason, verdict


class SampleDrawing(PdfLayout):
    """Draws one explained sample (an entry of the content's ``samples``, :func:`.samples.explain_samples`)."""

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
        scope = f"NONE OF THE LEARNED TASKS ({scope_reason(smp)}); closest guess: " if smp["out_of_scope"] else ""
        score = "" if smp["out_of_scope"] or smp["scope_score"] != smp["scope_score"] else \
            f" · scope score {smp['scope_score']:.2f}"
        answer = f"task-agnostic answer: {scope}task {smp['pred_task']} ({self.names[smp['pred_task']]}), class " \
                 f"{smp['pred_class']}{score}"
        v = smp.get("tag_verdict")
        if v:
            answer += "  " + verdict(v, marks, shout=True)
        lines.append((answer, red if smp["out_of_scope"] or (v and not v["right"]) else green if v else grey,
                      bool(smp["out_of_scope"] or (v and not v["right"]))))
        v = smp.get("taw_verdict")
        if v:
            lines.append((f"sub-network of the true task {v['task']}: class {v['class']}  "
                          + verdict(v, marks, shout=True), green if v["right"] else red, not v["right"]))
        if smp.get("modality"):
            lines.append((f"DICOM modality {smp['modality']}", grey, False))
        return lines

    def subnet(self, sub, p, chosen, image, x, y, img):
        """Sub-network ``m``'s column: its name, P_T as a bar in its task colour (outlined when chosen), its
        class and probability, its heatmap and the heatmap over the input."""
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
        pdf, t = self.pdf, self.t
        self.text(6.2, "", (110, 110, 110))
        pdf.set_xy(x, y)
        pdf.multi_cell(w, 2.9, t("above: relevance heatmap\nbelow: heatmap over the input\n\nrelevance colour key"),
                       align="L")
        key = np.linspace(-1, 1, 101)[None, :].repeat(6, 0)
        pdf.image(png(heatmap_rgb(key), enlarge=False), x=x, y=pdf.get_y() + 0.5, w=w, h=3)
        pdf.set_xy(x, pdf.get_y() + 3.8)
        for label, align in (("-max", "L"), ("0", "C"), ("+max", "R")):
            pdf.cell(w / 3, 3, t(label), align=align)
