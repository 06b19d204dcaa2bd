"""Visual evaluation report: one self-contained HTML page plus PNG grids for notebooks.

The page (inline CSS and JS, no network) shows a summary table sortable by any column, then per
task the demonstration pairs, each test input, its expected output and the top-2 voted answers
with their votes, marked right or wrong. Grids are sent as JSON in ``data-g`` attributes and
drawn into canvases by a few lines of JS, which keeps the page small for 400 tasks.

PNGs are written with a dozen lines of zlib (no matplotlib or Pillow needed):

    from IPython.display import Image
    Image(data=task_png(test_puzzles["007bbfb7"]))

Regenerate a report from an evaluation folder:
    python -m evaluators.report OUT_DIR --data data/arc-aug-1000
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
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.summary{border-collapse:collapse}
table.summary th,table.summary td{border:1px solid #ccc;padding:2px 8px;text-align:center}
table.summary th{cursor:pointer;background:#eee;user-select:none}
table.summary th:after{content:" \\2195";color:#999}
.task{border-top:2px solid #888;margin-top:1.5em;padding-top:.5em}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin:.4em 0}
figure{margin:0;text-align:center;font-size:12px}
canvas{image-rendering:pixelated;display:block;margin:auto}
.mark{font-weight:bold;font-size:1.2em}.ok{color:#2a2}.bad{color:#c22}.unknown{color:#888}
.metrics td{padding:1px 10px}
"""

_JS = """
const PAL=%s;
function draw(c){const g=JSON.parse(c.dataset.g),h=g.length,w=h?g[0].length:0,s=Math.max(4,Math.min(16,Math.floor(160/Math.max(h,w,1))));
c.width=w*s+1;c.height=h*s+1;const x=c.getContext('2d');x.fillStyle='#555';x.fillRect(0,0,c.width,c.height);
for(let i=0;i<h;i++)for(let j=0;j<w;j++){x.fillStyle=PAL[g[i][j]];x.fillRect(j*s+1,i*s+1,s-1,s-1);}}
const io=('IntersectionObserver' in window)?new IntersectionObserver(es=>es.forEach(e=>{if(e.isIntersecting){draw(e.target);io.unobserve(e.target);}})):null;
document.querySelectorAll('canvas[data-g]').forEach(c=>io?io.observe(c):draw(c));
document.querySelectorAll('table.summary th').forEach((th,col)=>th.addEventListener('click',()=>{
const tb=th.closest('table').tBodies[0],rows=[...tb.rows],asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
const key=r=>{const v=r.cells[col].dataset.v??r.cells[col].textContent;const n=parseFloat(v);return isNaN(n)?v:n;};
rows.sort((a,b)=>{const p=key(a),q=key(b);return (p<q?-1:p>q?1:0)*(asc?1:-1);});rows.forEach(r=>tb.appendChild(r));}));
"""


def _canvas(grid: Any, caption: str) -> str:
    data = html.escape(json.dumps(np.asarray(grid).astype(int).tolist(), separators=(",", ":")))
    return f'<figure><canvas data-g="{data}"></canvas><figcaption>{caption}</figcaption></figure>'


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
    for task_id, task in test_puzzles.items():
        per_input = answers.get(task_id, [])
        known = [("output" in p) for p in task["test"]]
        ranks = [per_input[j]["correct_rank"] if j < len(per_input) else None for j in range(len(task["test"]))]
        right = [r is not None and r < 2 for r in ranks]
        score = sum(right) / len(right) if all(known) else None
        top_votes = sum(e["answers"][0]["votes"] for e in per_input if e["answers"])
        anchor = html.escape(task_id)
        marks = "".join(_mark(r, kn) for r, kn in zip(ranks, known))
        score_txt = "?" if score is None else f"{score:.2f}"
        summary.append(
            f'<tr><td data-v="{anchor}"><a href="#task-{anchor}">{anchor}</a></td><td>{len(task["test"])}</td>'
            f'<td data-v="{-1 if score is None else score}">{score_txt}</td><td>{marks}</td><td>{top_votes}</td></tr>'
        )
        parts = [f'<div class="task" id="task-{anchor}"><h3>{anchor} {marks}</h3>', "<h4>Demonstrations</h4>"]
        for i, pair in enumerate(task.get("train", [])):
            parts.append(f'<div class="row">{_canvas(pair["input"], f"input {i + 1}")}{_canvas(pair["output"], f"output {i + 1}")}</div>')
        for j, pair in enumerate(task["test"]):
            parts.append(f"<h4>Test input {j + 1} {_mark(ranks[j], known[j])}</h4><div class='row'>")
            parts.append(_canvas(pair["input"], "test input"))
            if known[j]:
                parts.append(_canvas(pair["output"], "expected"))
            ranked = per_input[j]["answers"] if j < len(per_input) else []
            for r, ans in enumerate(ranked[:2]):
                ok = known[j] and ranks[j] == r
                tag = " &#10003;" if ok else ""
                parts.append(_canvas(ans["grid"], f"attempt {r + 1}: {ans['votes']} votes, conf {ans['confidence']:.2f}{tag}"))
            if not ranked:
                parts.append("<figure><em>no usable prediction</em></figure>")
            parts.append("</div>")
        parts.append("</div>")
        sections.append("".join(parts))
    metric_rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{v:.4f}</td></tr>" if isinstance(v, float) else f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in (metrics or {}).items()
    )
    head = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<table class='metrics'>{metric_rows}</table>",
        "<h2>Tasks</h2><table class='summary'><thead><tr><th>task</th><th>test inputs</th><th>pass@2 score</th>"
        "<th>marks</th><th>top votes</th></tr></thead><tbody>",
        "".join(summary),
        "</tbody></table>",
        "".join(sections),
        f"<script>{_JS % json.dumps(list(ARC_PALETTE))}</script></body></html>",
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
    write_report(out / "report.html", load_test_puzzles(args.data), json.loads((out / "answers.json").read_text()), metrics)
    print(out / "report.html")


if __name__ == "__main__":
    main()
