"""Maze evaluator: exact accuracy plus whether the predicted path is a path, and a shortest one.

Tokens as dataset.build_maze_dataset writes them: ``# SGo`` -> 1..5 (wall, open, start, goal,
path), PAD 0. The predicted path is the set of cells predicted ``o``.

Metrics (over the test split):
- ``Maze/exact_accuracy``: prediction equals the label everywhere (the papers' figure).
- ``Maze/path_valid``: every predicted path cell is an open cell of the maze, and S reaches G
  through path cells (4-neighbour steps).
- ``Maze/path_optimal``: valid and no longer than the label's path, hence a shortest path (it
  counts another shortest path as right, which exact accuracy does not).
- ``Maze/cell_accuracy``: cells right among all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evaluators.puzzle_report import maze_figure, page
from evaluators.single_answer import PuzzleRowsEvaluator, mean

WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5


def reaches_goal(inputs: np.ndarray, path: np.ndarray, side: int) -> np.ndarray:
    """[n] bool: S and G are joined through ``path`` cells, by flooding from S (all mazes at once)."""
    n = len(inputs)
    grid_in = inputs.reshape(n, side, side)
    passable = path.reshape(n, side, side) | (grid_in == GOAL)
    reached = grid_in == START
    while True:
        grown = reached.copy()
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown[:, :, 1:] |= reached[:, :, :-1]
        grown[:, :, :-1] |= reached[:, :, 1:]
        grown &= passable | reached
        if (grown == reached).all():
            break
        reached = grown
    return (reached & (grid_in == GOAL)).any(axis=(1, 2))


def maze_path_scores(inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([n] path valid, [n] path valid and as short as the label's) for token arrays [n, side*side]."""
    side = math.isqrt(inputs.shape[1])
    path = preds == PATH
    on_open = (~path | (inputs == OPEN)).all(axis=1)
    one_start_goal = ((inputs == START).sum(axis=1) == 1) & ((inputs == GOAL).sum(axis=1) == 1)
    valid = on_open & one_start_goal & reaches_goal(inputs, path, side)
    optimal = valid & (path.sum(axis=1) <= (labels == PATH).sum(axis=1))
    return valid, optimal


class MazeEvaluator(PuzzleRowsEvaluator):
    name = "Maze"

    def check_metadata(self, meta: Any) -> None:
        seq_len = int(getattr(meta, "seq_len", 900))
        if math.isqrt(seq_len) ** 2 != seq_len:
            raise ValueError(f"maze evaluator: the test split has seq_len {seq_len}, not a square grid")

    def score(self, inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray):
        right = preds == labels
        exact = right.all(axis=1)
        valid, optimal = maze_path_scores(inputs, labels, preds)
        metrics = {
            "Maze/exact_accuracy": mean(exact),
            "Maze/path_valid": mean(valid),
            "Maze/path_optimal": mean(optimal),
            "Maze/cell_accuracy": mean(right),
        }
        return {"exact": exact, "path_valid": valid, "path_optimal": optimal}, metrics

    def render(self, rows: dict[str, np.ndarray], metrics: dict[str, float]) -> str:
        side = math.isqrt(rows["inputs"].shape[1]) if len(rows["inputs"]) else 0
        items = []
        for i in self.shown_rows(rows["exact"]).tolist():
            status = ("right" if rows["exact"][i] else "another shortest path" if rows["path_optimal"][i]
                      else "valid but longer path" if rows["path_valid"][i] else "no valid path")
            items.append((f"test maze {i} &mdash; {status}", rows["exact"][i] or rows["path_optimal"][i],
                          [maze_figure(rows["inputs"][i], None, side, "maze"),
                           maze_figure(rows["preds"][i], rows["labels"][i], side, "prediction"),
                           maze_figure(rows["labels"][i], None, side, "label")]))
        note = ("Walls dark, S green, G red, path blue; in the prediction, path cells off the label's path are "
                f"orange and label path cells missed are light blue. Showing up to {self.report_max} wrong mazes.")
        return page(self.report_title, metrics, note, items)


__all__ = ["MazeEvaluator", "maze_path_scores", "reaches_goal"]
