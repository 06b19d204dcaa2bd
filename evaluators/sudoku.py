"""Sudoku evaluator: the papers' exact accuracy plus what explains it.

Tokens as dataset.build_sudoku_dataset writes them: digit d -> d + 1, blank -> 1, PAD 0.

Metrics (over the test split, one puzzle per example):
- ``Sudoku/exact_accuracy``: prediction equals the label in all 81 cells (the TRM/HRM headline,
  the same figure as ``all/exact_accuracy``).
- ``Sudoku/valid``: the prediction is a complete valid grid (every row, column and box holds 1-9)
  that keeps every clue.
- ``Sudoku/valid_not_label``: valid but not the label: the puzzle has another solution.
- ``Sudoku/blank_cell_accuracy``: cells right among those blank in the puzzle (the clues are
  trivially copied, so the all-cell figure flatters a model).
- ``Sudoku/cell_accuracy``: cells right among all 81.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluators.puzzle_report import page, sudoku_figure
from evaluators.single_answer import PuzzleRowsEvaluator, mean

BLANK_TOKEN = 1
_ALL_DIGITS = sum(1 << d for d in range(1, 10))
# The 27 units (9 rows, 9 columns, 9 boxes) as cell indices [27, 9].
_CELLS = np.arange(81).reshape(9, 9)
UNITS = np.concatenate([_CELLS, _CELLS.T, _CELLS.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)])


def sudoku_validity(inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """[n] bool: ``preds`` are complete valid grids keeping the clues of ``inputs`` (tokens)."""
    digits = preds.astype(np.int16) - 1
    digits = np.where((digits >= 1) & (digits <= 9), digits, 0)  # blank / PAD / junk: fails below
    seen = np.bitwise_or.reduce(np.left_shift(1, digits[:, UNITS]), axis=2)  # [n, 27] bit set of digits
    complete = (seen == _ALL_DIGITS).all(axis=1)
    clues = inputs != BLANK_TOKEN
    return complete & ((preds == inputs) | ~clues).all(axis=1)


class SudokuEvaluator(PuzzleRowsEvaluator):
    name = "Sudoku"

    def check_metadata(self, meta: Any) -> None:
        seq_len = getattr(meta, "seq_len", 81)
        if seq_len != 81:
            raise ValueError(f"sudoku evaluator: the test split has seq_len {seq_len}, expected 81 (is it a Sudoku dataset?)")

    def score(self, inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray):
        right = preds == labels
        exact = right.all(axis=1)
        valid = sudoku_validity(inputs, preds)
        blank = inputs == BLANK_TOKEN
        metrics = {
            "Sudoku/exact_accuracy": mean(exact),
            "Sudoku/valid": mean(valid),
            "Sudoku/valid_not_label": mean(valid & ~exact),
            "Sudoku/blank_cell_accuracy": float(right[blank].mean()) if blank.any() else 0.0,
            "Sudoku/cell_accuracy": mean(right),
        }
        return {"exact": exact, "valid": valid}, metrics

    def render(self, rows: dict[str, np.ndarray], metrics: dict[str, float]) -> str:
        items = []
        for i in self.shown_rows(rows["exact"]).tolist():
            status = "right" if rows["exact"][i] else ("valid, differs from the label" if rows["valid"][i] else "wrong")
            items.append((f"test puzzle {i} &mdash; {status}", rows["exact"][i],
                          [sudoku_figure(rows["inputs"][i], None, None, "puzzle"),
                           sudoku_figure(rows["inputs"][i], rows["preds"][i], rows["labels"][i], "prediction"),
                           sudoku_figure(rows["inputs"][i], rows["labels"][i], None, "label")]))
        note = ("Clues in bold; predicted digits plain; wrong predicted digits on red. "
                f"Showing up to {self.report_max} wrong puzzles, then a few right ones.")
        return page(self.report_title, metrics, note, items)


__all__ = ["SudokuEvaluator", "sudoku_validity", "UNITS"]
