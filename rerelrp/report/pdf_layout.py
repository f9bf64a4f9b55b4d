"""The drawing primitives of the PDF report (fpdf2, A4 portrait, mm): page header and footer, text,
headings, tables, warning boxes, text cut to a width and images.

:class:`PdfLayout` knows nothing of a report's sections; :mod:`.pdf_samples` and :mod:`.pdf` draw
with it. Images are PNGs made in memory, enlarged with nearest neighbours so pixels stay sharp.
"""
from __future__ import annotations

import io

import numpy as np
from plotly.colors import hex_to_rgb

from rerelrp.data.images import encode_png
from rerelrp.figures.plots import task_colors
from rerelrp.report.fonts import use_font

ACCENT = (76, 120, 168)
BORDER = (210, 210, 210)
HEADING_FILL = (238, 241, 245)
INK = (34, 34, 34)
IMAGE_PX = 160  # images are enlarged to about this many pixels per side


def png(rgb, enlarge=True):
    """PNG bytes for fpdf2, enlarged with nearest neighbours so that viewers show sharp pixels."""
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



class PdfLayout:
    """An A4 PDF with the report's page header and footer, and the primitives its sections draw with;
    task ``i`` of ``task_names`` is drawn in ``colors[i]`` (the task colours of :mod:`rerelrp.figures.plots`)."""

    def __init__(self, title, task_names, font=True):
        pdf = self.pdf = _pdf_class()(orientation="P", unit="mm", format="A4")
        pdf.set_margins(15, 17, 15)
        pdf.set_auto_page_break(True, margin=16)
        self.t = pdf.t = use_font(pdf, font)
        pdf.header_text = title
        pdf.set_title(self.t(title))
        pdf.set_creator("rerelrp")
        pdf.alias_nb_pages()
        self.W = pdf.w - pdf.l_margin - pdf.r_margin
        self.names = task_names
        self.colors = [hex_to_rgb(c) for c in task_colors(len(self.names))]

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
        self.pdf.image(png(rgb), x=x, y=y, w=size, h=size)
