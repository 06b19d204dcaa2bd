"""Trends across rounds: ``trend.json`` and a small ``trend.png`` line chart, written after each round.

No plotting library: the chart is drawn into a numpy image and encoded with the project's PNG
writer. Y axis 0..1 with grid lines every 0.25, one x step per round; colours: grey = baseline
accuracy, blue = adapted accuracy, green = success rate (share of self-edits rewarded).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from evaluators.report import encode_png
from utils.io import atomic_path, atomic_write_json

SERIES = (("baseline", (128, 128, 128)), ("adapted", (31, 119, 180)), ("success_rate", (44, 160, 44)))
W, H, PAD = 480, 300, 30


def collect(run_dir: Path, metric: str) -> dict[str, list]:
    rounds = sorted((int(m.group(1)), p) for p in run_dir.glob("round_*/results.json")
                    if (m := re.fullmatch(r"round_(\d+)", p.parent.name)))
    out: dict[str, list] = {"round": [], "baseline": [], "adapted": [], "success_rate": []}
    for r, path in rounds:
        s = json.loads(path.read_text())["summary"]
        out["round"].append(r)
        out["baseline"].append(s.get(f"baseline_{metric}"))
        out["adapted"].append(s.get(f"adapted_{metric}"))
        out["success_rate"].append(s.get("success_rate"))
    return out


def _line(img: np.ndarray, p0, p1, colour, width: int = 2) -> None:
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]), 1))
    for t in np.linspace(0.0, 1.0, n + 1):
        x, y = round(p0[0] + t * (p1[0] - p0[0])), round(p0[1] + t * (p1[1] - p0[1]))
        img[max(0, y - width // 2): y + width - width // 2, max(0, x - width // 2): x + width - width // 2] = colour


def draw(series: dict[str, list]) -> np.ndarray:
    img = np.full((H, W, 3), 255, dtype=np.uint8)
    n = max(len(series["round"]), 1)

    def at(i, v):
        x = PAD + (W - 2 * PAD) * (i / (n - 1) if n > 1 else 0.5)
        return x, H - PAD - (H - 2 * PAD) * min(max(v, 0.0), 1.0)

    for g in (0.25, 0.5, 0.75):
        _line(img, at(0, g) if n > 1 else (PAD, at(0, g)[1]), (W - PAD, at(0, g)[1]), (225, 225, 225), 1)
    _line(img, (PAD, PAD), (PAD, H - PAD), (0, 0, 0), 1)
    _line(img, (PAD, H - PAD), (W - PAD, H - PAD), (0, 0, 0), 1)
    for name, colour in SERIES:
        points = [at(i, v) for i, v in enumerate(series[name]) if v is not None]
        for a, b in zip(points, points[1:]):
            _line(img, a, b, colour)
        for x, y in points:
            img[int(y) - 3: int(y) + 4, int(x) - 3: int(x) + 4] = colour
    return img


def write_trend(run_dir: Path, metric: str) -> Path:
    series = collect(Path(run_dir), metric)
    atomic_write_json(Path(run_dir) / "trend.json", {"metric": metric, **series}, indent=1)
    path = Path(run_dir) / "trend.png"
    with atomic_path(path) as tmp:
        tmp.write_bytes(encode_png(draw(series)))
    return path
