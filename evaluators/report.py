"""Visual evaluation report: one self-contained HTML page plus PNG grids for notebooks.

The page (inline CSS and JS, no network) shows a summary table sortable by any column, then per
task the demonstration pairs, each test input, its expected output and the top-2 voted answers
with their votes, marked right or wrong. Grids are inline SVG, present in the page as it loads (a
headless screenshot or print-to-PDF shows every one, no script needed): a background rectangle in
the grid's most common colour, one ``<path>`` per other colour made of horizontal runs of cells,
and the cell lines from a shared pattern, which keeps the page small for 400 tasks.

PNGs are written with a dozen lines of zlib (no matplotlib or Pillow needed):

    from IPython.display import Image
    Image(data=task_png(test_puzzles["007bbfb7"]))

Regenerate a report from an evaluation folder:
    python -m evaluators.report OUT_DIR --data data/arc1-aug-1000
"""

from __future__ import annotations

import argparse
import html
import json
import struct
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from utils.io import atomic_path, atomic_write_text

# The standard ARC colours 0..9 (black, blue, red, green, yellow, grey, magenta, orange, sky, maroon).
ARC_PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")
_PALETTE_RGB = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in ARC_PALETTE], dtype=np.uint8)
_LINE_RGB = np.array([85, 85, 85], dtype=np.uint8)
_BACKGROUND_RGB = np.array([255, 255, 255], dtype=np.uint8)


# ----- PNG -----
def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 image [h, w, 3] as PNG (8-bit truecolour, filter 0 on every row)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def grid_image(grid: Any, cell: int = 16) -> np.ndarray:
    """RGB image of a grid: ``cell`` pixels per cell, 1-pixel grey lines between and around cells."""
    g = np.asarray(grid, dtype=np.int64)
    h, w = g.shape
    img = np.empty((h * (cell + 1) + 1, w * (cell + 1) + 1, 3), np.uint8)
    img[:] = _LINE_RGB
    cells = np.repeat(np.repeat(_PALETTE_RGB[g], cell, axis=0), cell, axis=1)  # [h*cell, w*cell, 3]
    rows = (np.arange(h * cell) // cell) * (cell + 1) + np.arange(h * cell) % cell + 1
    cols = (np.arange(w * cell) // cell) * (cell + 1) + np.arange(w * cell) % cell + 1
    img[np.ix_(rows, cols)] = cells
    return img


def compose(rows: Sequence[Sequence[np.ndarray]], gap: int = 12) -> np.ndarray:
    """Lay images out in rows (left to right, top to bottom) on a white background."""
    heights = [max((im.shape[0] for im in row), default=0) for row in rows]
    widths = [sum(im.shape[1] for im in row) + gap * max(len(row) - 1, 0) for row in rows]
    canvas = np.empty((sum(heights) + gap * (len(rows) + 1), max(widths, default=0) + 2 * gap, 3), np.uint8)
    canvas[:] = _BACKGROUND_RGB
    y = gap
    for row, height in zip(rows, heights):
        x = gap
        for im in row:
            canvas[y : y + im.shape[0], x : x + im.shape[1]] = im
            x += im.shape[1] + gap
        y += height + gap
    return canvas


def grid_png(grid: Any, cell: int = 16) -> bytes:
    return encode_png(grid_image(grid, cell))


def task_png(task: Mapping, predictions: Sequence[Any] | None = None, cell: int = 12) -> bytes:
    """One row per pair: input, output (if known), then any predictions given for that test input."""
    rows = [[grid_image(p["input"], cell), grid_image(p["output"], cell)] for p in task.get("train", [])]
    for j, pair in enumerate(task.get("test", [])):
        row = [grid_image(pair["input"], cell)] + ([grid_image(pair["output"], cell)] if "output" in pair else [])
        if predictions is not None and j < len(predictions):
            row += [grid_image(g, cell) for g in predictions[j]]
        rows.append(row)
    return encode_png(compose(rows))


def save_png(path: str | Path, png: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


# ----- HTML -----
REPORT_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.summary{border-collapse:collapse}
table.summary th,table.summary td{border:1px solid #ccc;padding:2px 8px;text-align:center}
table.summary th{cursor:pointer;background:#eee;user-select:none}
table.summary th:after{content:" \\2195";color:#999}
.task{border-top:2px solid #888;margin-top:1.5em;padding-top:.5em}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin:.4em 0}
figure{margin:0;text-align:center;font-size:12px}
svg.g{display:block;margin:auto;shape-rendering:crispEdges}
.mark{font-weight:bold;font-size:1.2em}.ok{color:#2a2}.bad{color:#c22}.unknown{color:#888}
.metrics td{padding:1px 10px}
"""

# Only sorting needs script; the grids are drawn without it.
_JS = """
document.querySelectorAll('table.summary th').forEach((th,col)=>th.addEventListener('click',()=>{
const tb=th.closest('table').tBodies[0],rows=[...tb.rows],asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
const key=r=>{const v=r.cells[col].dataset.v??r.cells[col].textContent;const n=parseFloat(v);return isNaN(n)?v:n;};
rows.sort((a,b)=>{const p=key(a),q=key(b);return (p<q?-1:p>q?1:0)*(asc?1:-1);});rows.forEach(r=>tb.appendChild(r));}));
"""


_LINE = "#555"


def cell_pixels(h: int, w: int) -> int:
    """On-screen pixels per cell: grids up to 10 cells across get 16, a 30x30 grid gets 5."""
    return max(4, min(16, 160 // max(h, w, 1)))


def _line_pattern(px: int) -> str:
    # The cell lines as a one-cell tile, in cell units: its left and top edges, 2/px wide because
    # the tile clips half of each; one pattern per pixel size so every grid shows ~1 px lines.
    return (f'<pattern id="l{px}" width="1" height="1" patternUnits="userSpaceOnUse">'
            f'<path d="M0 0H1M0 0V1" fill="none" stroke="{_LINE}" stroke-width="{2 / px:.3g}"/></pattern>')


def _rectangles(g: np.ndarray, background: int) -> list[tuple[int, int, int, int, int]]:
    """(colour, x, y, width, height) covering every non-background cell: horizontal runs of one colour,
    a run stacked on an identical run of the row above extending that rectangle down."""
    done, open_ = [], {}
    for y, row in enumerate(g):
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        still_open = {}
        for x0, x1 in zip(starts.tolist(), np.r_[starts[1:], len(row)].tolist()):
            colour = int(row[x0])
            if colour == background:
                continue
            key = (colour, x0, x1)
            rect = open_.pop(key, None)
            if rect is None:
                rect = [colour, x0, y, x1 - x0, 0]
            rect[4] += 1
            still_open[key] = rect
        done += open_.values()
        open_ = still_open
    return [tuple(r) for r in done + list(open_.values())]


def grid_svg(grid: Any) -> tuple[str, int]:
    """Inline SVG of a grid in cell units, and its pixels per cell (for the line pattern)."""
    g = np.asarray(grid, dtype=np.int64).reshape(len(grid), -1) if len(grid) else np.zeros((0, 0), np.int64)
    h, w = g.shape
    px = cell_pixels(h, w)
    if g.size == 0:  # an empty answer: a white cell with a dashed border
        return (f'<svg class="g" width="{px}" height="{px}" viewBox="0 0 1 1"><rect width="1" height="1" fill="#fff" '
                f'stroke="{_LINE}" stroke-width=".2" stroke-dasharray=".2"/></svg>'), px
    background = int(np.bincount(g.ravel(), minlength=len(ARC_PALETTE)).argmax())
    by_colour: dict[int, list[str]] = {}
    for colour, x, y, width, height in _rectangles(g, background):
        by_colour.setdefault(colour, []).append(f"M{x} {y}h{width}v{height}h-{width}z")
    paths = "".join(f'<path class="c{c}" d="{"".join(d)}"/>' for c, d in sorted(by_colour.items()))
    # The outer border is centred on the edge and half clipped, hence 2/px for ~1 px, like the lines.
    return (f'<svg class="g" width="{w * px}" height="{h * px}" viewBox="0 0 {w} {h}">'
            f'<rect class="c{background}" width="{w}" height="{h}"/>{paths}'
            f'<rect class="l{px}" width="{w}" height="{h}"/></svg>'), px


class _Figures:
    """Collects the line patterns the page's grids use, so each is defined once."""

    def __init__(self) -> None:
        self.sizes: set[int] = set()

    def __call__(self, grid: Any, caption: str) -> str:
        svg, px = grid_svg(grid)
        self.sizes.add(px)
        return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"

    def defs(self) -> str:
        patterns = "".join(_line_pattern(px) for px in sorted(self.sizes))
        return f'<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>{patterns}</defs></svg>'

    def css(self) -> str:
        colours = "".join(f".c{i}{{fill:{c}}}" for i, c in enumerate(ARC_PALETTE))
        lines = "".join(f".l{px}{{fill:url(#l{px});stroke:{_LINE};stroke-width:{2 / px:.3g}}}" for px in sorted(self.sizes))
        return colours + lines


def _count(n: float, unit: str) -> str:
    n = int(round(n))
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _mark(rank: int | None, known: bool, k: int = 2) -> str:
    if not known:
        return '<span class="mark unknown" title="no solution">?</span>'
    if rank is not None and rank < k:
        return f'<span class="mark ok" title="right at rank {rank + 1}">&#10003;</span>'
    return '<span class="mark bad" title="not in the top 2">&#10007;</span>'


def render_report(
    test_puzzles: Mapping[str, Mapping],
    answers: Mapping[str, Sequence[Mapping]],
    metrics: Mapping[str, float] | None = None,
    title: str = "ARC evaluation",
) -> str:
    """HTML page for ``answers`` in the evaluator's answers.json layout (see ARCEvaluator.save)."""
    summary, sections = [], []
    figure = _Figures()
    for task_id, task in test_puzzles.items():
        per_input = answers.get(task_id, [])
        known = [("output" in p) for p in task["test"]]
        ranks = [per_input[j]["correct_rank"] if j < len(per_input) else None for j in range(len(task["test"]))]
        right = [r is not None and r < 2 for r in ranks]
        score = sum(right) / len(right) if all(known) else None
        top_votes = int(round(sum(e["answers"][0]["votes"] for e in per_input if e["answers"])))
        anchor = html.escape(task_id)
        marks = "".join(_mark(r, kn) for r, kn in zip(ranks, known))
        score_txt = "?" if score is None else f"{score:.2f}"
        summary.append(
            f'<tr><td data-v="{anchor}"><a href="#task-{anchor}">{anchor}</a></td><td>{len(task["test"])}</td>'
            f'<td data-v="{-1 if score is None else score}">{score_txt}</td><td>{marks}</td><td>{top_votes}</td></tr>'
        )
        parts = [f'<div class="task" id="task-{anchor}"><h3>{anchor} {marks}</h3>', "<h4>Demonstrations</h4>"]
        for i, pair in enumerate(task.get("train", [])):
            parts.append(f'<div class="row">{figure(pair["input"], f"input {i + 1}")}{figure(pair["output"], f"output {i + 1}")}</div>')
        for j, pair in enumerate(task["test"]):
            parts.append(f"<h4>Test input {j + 1} {_mark(ranks[j], known[j])}</h4><div class='row'>")
            parts.append(figure(pair["input"], "test input"))
            if known[j]:
                parts.append(figure(pair["output"], "expected"))
            ranked = per_input[j]["answers"] if j < len(per_input) else []
            for r, ans in enumerate(ranked[:2]):
                ok = known[j] and ranks[j] == r
                tag = " &#10003;" if ok else ""
                parts.append(figure(ans["grid"], f"attempt {r + 1}: {_count(ans['votes'], 'vote')}, conf {ans['confidence']:.2f}{tag}"))
            if not ranked:
                parts.append("<figure><em>no usable prediction</em></figure>")
            parts.append("</div>")
        parts.append("</div>")
        sections.append("".join(parts))
    metric_rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{v:.4f}</td></tr>" if isinstance(v, float) else f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in (metrics or {}).items()
    )
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{REPORT_CSS}{figure.css()}</style></head><body>")
    body = [
        figure.defs(),
        f"<h1>{html.escape(title)}</h1>",
        f"<table class='metrics'>{metric_rows}</table>",
        "<h2>Tasks</h2><table class='summary'><thead><tr><th>task</th><th>test inputs</th><th>pass@2 score</th>"
        "<th>marks</th><th>top votes</th></tr></thead><tbody>",
        "".join(summary),
        "</tbody></table>",
        "".join(sections),
        f"<script>{_JS}</script></body></html>",
    ]
    return head + "".join(body)


def write_report(path: str | Path, test_puzzles: Mapping, answers: Mapping, metrics: Mapping | None = None, title: str = "ARC evaluation") -> None:
    atomic_write_text(path, render_report(test_puzzles, answers, metrics, title))


def main() -> None:
    parser = argparse.ArgumentParser(description="Render report.html from an evaluation folder")
    parser.add_argument("out_dir", help="folder with answers.json (and metrics.json)")
    parser.add_argument("--data", nargs="+", required=True, help="dataset folder(s) with test_puzzles.json")
    args = parser.parse_args()
    from dataset.metadata import load_test_puzzles

    out = Path(args.out_dir)
    metrics_file = out / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    checkpoint = (metrics or {}).get("checkpoint", str(out))  # evaluate.py records what it evaluated
    title = f"ARC evaluation of {checkpoint} on {', '.join(args.data)}"
    write_report(out / "report.html", load_test_puzzles(args.data), json.loads((out / "answers.json").read_text()),
                 metrics, title)
    print(out / "report.html")


if __name__ == "__main__":
    main()
