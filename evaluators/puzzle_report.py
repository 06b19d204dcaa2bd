"""report.html for the Sudoku and Maze evaluators: one self-contained page, no network.

Sudoku grids are HTML tables (digits as text: clues bold, wrong digits on red); mazes are
canvases drawn by the ARC report's lazy-drawing approach with their own palette. The page's
metrics table and styles come from evaluators.report.
"""

from __future__ import annotations

import html
import json
from typing import Sequence

import numpy as np

from evaluators.report import REPORT_CSS

_EXTRA_CSS = """
table.sudoku{border-collapse:collapse;margin:auto;font:13px monospace}
table.sudoku td{width:16px;height:16px;text-align:center;border:1px solid #ccc;padding:0}
table.sudoku tr:nth-child(3n) td{border-bottom:2px solid #444}
table.sudoku td:nth-child(3n){border-right:2px solid #444}
table.sudoku tr:first-child td{border-top:2px solid #444}
table.sudoku td:first-child{border-left:2px solid #444}
td.clue{font-weight:bold}td.bad{background:#f88;color:#000}td.blank{color:#bbb}
"""

# Maze display codes: 0 PAD, 1 wall, 2 open, 3 S, 4 G, 5 path, 6 path off the label's, 7 label path missed.
_MAZE_PALETTE = ["#ffffff", "#333333", "#ffffff", "#2ECC40", "#FF4136", "#0074D9", "#FF851B", "#BDE3FF"]
_MAZE_JS = """
const PAL=%s;
function draw(c){const g=JSON.parse(c.dataset.g),h=g.length,w=h?g[0].length:0,s=Math.max(3,Math.floor(180/Math.max(h,w,1)));
c.width=w*s;c.height=h*s;const x=c.getContext('2d');
for(let i=0;i<h;i++)for(let j=0;j<w;j++){x.fillStyle=PAL[g[i][j]];x.fillRect(j*s,i*s,s,s);}}
document.querySelectorAll('canvas[data-g]').forEach(draw);
"""


def sudoku_figure(inputs: np.ndarray, values: np.ndarray | None, labels: np.ndarray | None, caption: str) -> str:
    """A 9x9 table: ``values`` (tokens; None = the puzzle's clues), clues bold, cells != ``labels`` red."""
    shown = inputs if values is None else values
    cells = []
    for r in range(9):
        tds = []
        for c in range(9):
            k = 9 * r + c
            digit = int(shown[k]) - 1
            classes = []
            if inputs[k] != 1:
                classes.append("clue")
            if labels is not None and shown[k] != labels[k]:
                classes.append("bad")
            text = str(digit) if 1 <= digit <= 9 else "&middot;"
            if digit < 1:
                classes.append("blank")
            tds.append(f'<td class="{" ".join(classes)}">{text}</td>')
        cells.append("<tr>" + "".join(tds) + "</tr>")
    return f'<figure><table class="sudoku">{"".join(cells)}</table><figcaption>{html.escape(caption)}</figcaption></figure>'


def maze_figure(tokens: np.ndarray, labels: np.ndarray | None, side: int, caption: str) -> str:
    """A canvas of a maze; with ``labels``, path cells off the label's path and missed ones marked."""
    grid = np.asarray(tokens, dtype=np.int64).copy()
    if labels is not None:
        grid[(tokens == 5) & (labels != 5)] = 6
        grid[(tokens != 5) & (labels == 5)] = 7
    data = html.escape(json.dumps(grid.reshape(side, side).tolist(), separators=(",", ":")))
    return f'<figure><canvas data-g="{data}"></canvas><figcaption>{html.escape(caption)}</figcaption></figure>'


def page(title: str, metrics: dict[str, float], note: str,
         items: Sequence[tuple[str, bool, Sequence[str]]]) -> str:
    """The whole page: metrics table, a note, then per item a heading with a mark and its figures."""
    metric_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in metrics.items())
    sections = []
    for heading, ok, figures in items:
        mark = '<span class="mark ok">&#10003;</span>' if ok else '<span class="mark bad">&#10007;</span>'
        sections.append(f'<div class="task"><h3>{heading} {mark}</h3><div class="row">{"".join(figures)}</div></div>')
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{REPORT_CSS}{_EXTRA_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<table class='metrics'>{metric_rows}</table><p>{html.escape(note)}</p>{''.join(sections)}"
            f"<script>{_MAZE_JS % json.dumps(_MAZE_PALETTE)}</script></body></html>")
