"""Report: the HTML names every task with the right marks; PNGs decode to the ARC palette."""

import html
import json
import struct
import zlib

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
    # The expected grid, the demonstrations and the vote counts are on the page.
    assert html.escape(json.dumps(grid(2, 2, 1).tolist(), separators=(",", ":"))) in section("solved")
    assert "1 votes" in section("solved") and "input 1" in section("solved")
    assert "ARC/pass@2" in page and "<script>" in page and "http" not in page.split("<script>")[1]


def test_summary_scores_in_rows():
    puzzles = {"a": {"train": [], "test": [{"input": [[1]]}]}}
    page = render_report(puzzles, {"a": [{"correct_rank": None, "answers": [{"grid": [[2]], "votes": 3, "confidence": 0.5}]}]})
    assert 'class="mark unknown"' in page and "3 votes" in page
