"""Report: the HTML names every task with the right marks; PNGs decode to the ARC palette."""

import json
import re
import struct
import zlib
from html.parser import HTMLParser

import numpy as np

from evaluators.arc import ARCEvaluator
from evaluators.report import ARC_PALETTE, grid_png, render_report, task_png, write_report
from tests.arc_eval_worker import Case, grid


def decode_png(data: bytes) -> np.ndarray:
    """Minimal independent PNG reader for 8-bit RGB, filter 0 (what the encoder promises)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, colour_type = header[:4]
    assert (depth, colour_type) == (8, 2)
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_cells_have_the_arc_palette_colours():
    g = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    img = decode_png(grid_png(g, cell=10))
    assert img.shape == (2 * 11 + 1, 5 * 11 + 1, 3)
    for i in range(2):
        for j in range(5):
            hexcol = ARC_PALETTE[g[i, j]]
            want = [int(hexcol[k : k + 2], 16) for k in (1, 3, 5)]
            assert img[1 + i * 11 + 5, 1 + j * 11 + 5].tolist() == want


def test_task_png_decodes():
    task = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]], "output": [[4]]}]}
    img = decode_png(task_png(task, predictions=[[np.array([[4]]), np.array([[5]])]], cell=8))
    assert img.shape[2] == 3 and img.shape[0] > 20


def _evaluated_case(tmp_path):
    case = Case()
    case.add_task("solved", [(grid(3, 3, 1), grid(2, 2, 1))])
    case.add_task("half", [(grid(3, 3, 2), grid(2, 2, 2)), (grid(3, 3, 3), grid(2, 2, 3))])
    case.add_task("empty", [(grid(3, 3, 4), grid(2, 2, 4))])
    case.predict("solved", 0, grid(2, 2, 9), 0.9)
    case.predict("solved", 0, grid(2, 2, 1), 0.8)  # right, second place -> still in the top 2
    case.predict("half", 0, grid(2, 2, 2), 0.5)
    case.predict("half", 1, grid(2, 2, 8), 0.5)
    case.write(tmp_path)
    ev = ARCEvaluator(str(tmp_path), None, case.identifiers)
    for batch, preds in case.batches(4):
        ev.update_batch(batch, preds)
    metrics = ev.result(str(tmp_path / "out"))
    return case, json.loads((tmp_path / "out" / "answers.json").read_text()), metrics


def test_html_has_every_task_and_the_expected_marks(tmp_path):
    case, answers, metrics = _evaluated_case(tmp_path)
    write_report(tmp_path / "report.html", case.test_puzzles, answers, metrics)
    page = (tmp_path / "report.html").read_text()
    for task_id in ("solved", "half", "empty"):
        assert f'id="task-{task_id}"' in page and f'href="#task-{task_id}"' in page

    def section(task_id):
        start = page.index(f'id="task-{task_id}"')
        end = page.find('<div class="task"', start)
        return page[start : end if end > 0 else len(page)]

    # In each section: the heading's marks, then one mark per test input.
    assert section("solved").count('class="mark ok"') == 2 and 'class="mark bad"' not in section("solved")
    assert section("half").count('class="mark ok"') == 2 and section("half").count('class="mark bad"') == 2
    assert section("empty").count('class="mark bad"') == 2 and "no usable prediction" in section("empty")
    # The expected grid, the demonstrations and the vote counts are drawn in the page as it loads.
    solved = dict(decode_figures(section("solved")))
    assert solved["expected"] == grid(2, 2, 1).tolist() and solved["attempt 2: 1 vote, conf 0.80 \u2713"] == grid(2, 2, 1).tolist()
    assert solved["attempt 1: 1 vote, conf 0.90"] == grid(2, 2, 9).tolist()
    assert solved["test input"] == grid(3, 3, 1).tolist()
    assert "1 votes" not in page and "input 1" in section("solved")
    assert "ARC/pass@2" in page and "<script>" in page and "http" not in page.split("<script>")[1]
    # Nothing waits for scrolling or a script: no canvas, no IntersectionObserver, one SVG per grid.
    assert "<canvas" not in page and "IntersectionObserver" not in page
    shown = sum(len(t.get("train", [])) * 2 + sum(1 + ("output" in p) for p in t["test"]) for t in case.test_puzzles.values())
    attempts = sum(min(len(e["answers"]), 2) for per in answers.values() for e in per)
    assert len(decode_figures(page)) == shown + attempts


def test_summary_scores_in_rows():
    puzzles = {"a": {"train": [], "test": [{"input": [[1]]}]}}
    page = render_report(puzzles, {"a": [{"correct_rank": None, "answers": [{"grid": [[2]], "votes": 3.0, "confidence": 0.5}]}]})
    assert 'class="mark unknown"' in page and "attempt 1: 3 votes," in page and "3.0" not in page


class _FigureReader(HTMLParser):
    """Reads every <figure><svg class="g">...</svg><figcaption>...</figcaption> back into a grid."""

    def __init__(self):
        super().__init__()
        self.figures, self._grid, self._caption = [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        colour = COLOUR.get(a.get("class", ""))  # the page's CSS: .c0 ... .c9 are the ARC colours
        if tag == "svg" and a.get("class") == "g":
            _, _, w, h = map(int, a["viewbox"].split())  # HTMLParser lower-cases names
            self._size, self._grid = (h, w), None
        elif tag == "rect" and self._grid is None and hasattr(self, "_size"):
            h, w = self._size
            self._grid = [[colour] * w for _ in range(h)] if colour is not None else []  # [] is an empty grid
        elif tag == "path" and self._grid is not None and colour is not None:
            for x, y, width, height, back in re.findall(r"M(\d+) (\d+)h(\d+)v(\d+)h(-\d+)z", a["d"]):
                assert int(back) == -int(width)
                for dy in range(int(height)):
                    for dx in range(int(width)):
                        self._grid[int(y) + dy][int(x) + dx] = colour
        elif tag == "figcaption":
            self._caption = ""

    def handle_data(self, data):
        if self._caption is not None:
            self._caption += data

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self.figures.append((self._caption, self._grid))
            self._caption = None


COLOUR = {f"c{i}": i for i in range(len(ARC_PALETTE))}


def decode_figures(page: str) -> list:
    reader = _FigureReader()
    reader.feed(page)
    return [(caption, g) for caption, g in reader.figures if g is not None]


def test_svg_draws_every_cell_of_a_grid():
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 10, size=(h, w)) for h, w in [(1, 1), (3, 7), (30, 30), (12, 5)]]
    grids.append(np.where(rng.random((20, 20)) < 0.9, 0, rng.integers(1, 10, size=(20, 20))))  # mostly background
    blocks = np.zeros((9, 9), np.int64)
    blocks[1:4, 2:7], blocks[3:8, 4:6], blocks[5:9, 0:2] = 3, 5, 3  # rectangles that touch and overlap rows
    grids.append(blocks)
    puzzles = {"t": {"train": [{"input": g.tolist(), "output": g.T.tolist()} for g in grids], "test": [{"input": [[1]]}]}}
    page = render_report(puzzles, {"t": [{"correct_rank": None, "answers": [{"grid": [], "votes": 1, "confidence": 0}]}]})
    figures = decode_figures(page)
    assert figures[-1] == ("attempt 1: 1 vote, conf 0.00", [])  # an empty answer is drawn as such
    for i, g in enumerate(grids):
        assert figures[2 * i] == (f"input {i + 1}", g.tolist())
        assert figures[2 * i + 1] == (f"output {i + 1}", g.T.tolist())


def test_report_title_names_the_checkpoint_and_the_dataset(tmp_path):
    case, answers, metrics = _evaluated_case(tmp_path)
    page = (tmp_path / "out" / "report.html").read_text()  # written by the evaluator itself
    assert f"<title>ARC evaluation of {tmp_path / 'out'} on {tmp_path}</title>" in page
