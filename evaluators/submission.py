"""Kaggle ARC Prize submission files: write them atomically and score them.

Format: ``{task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}`` with one entry per test
input, in the task's test-input order. A test input with a single candidate repeats it as
``attempt_2``; one without any gets ``FALLBACK_GRID`` so the file is always complete.

Scoring (the ARC Prize Kaggle rule): a test input is right when either attempt equals the
solution exactly; a task scores the fraction of its test inputs that are right; the total is the
MEAN of the task scores over the tasks in the solutions (``score_submission``; multiply by the
number of tasks for the sum Kaggle shows as a count). This is the evaluator's ``ARC/pass@2``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from utils.io import atomic_write_json

FALLBACK_GRID = [[0]]
ATTEMPT_KEYS = ("attempt_1", "attempt_2")


def _as_list(grid: Any) -> list[list[int]]:
    return np.asarray(grid).astype(int).tolist()


def attempts_to_submission(attempts: Mapping[str, Sequence[Sequence[Any]]], num_attempts: int = 2) -> dict:
    """{task: [[grid, grid?], ...]} -> Kaggle dict; short lists padded with their first grid."""
    submission = {}
    for task_id, per_input in attempts.items():
        entries = []
        for grids in per_input:
            grids = [_as_list(g) for g in grids[:num_attempts]] or [FALLBACK_GRID]
            grids += [grids[0]] * (num_attempts - len(grids))
            entries.append({f"attempt_{i + 1}": g for i, g in enumerate(grids)})
        submission[task_id] = entries
    return submission


def write_submission(path: str | os.PathLike, attempts: Mapping[str, Sequence[Sequence[Any]]], num_attempts: int = 2) -> dict:
    """Write ``attempts`` as a Kaggle submission.json (atomically); returns the written dict."""
    submission = attempts_to_submission(attempts, num_attempts)
    atomic_write_json(path, submission)
    return submission


def load_submission(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


def solutions_from_test_puzzles(test_puzzles: Mapping[str, Mapping]) -> dict[str, list]:
    """Kaggle solutions layout ({task: [output grid per test input]}) from test_puzzles.json."""
    return {t: [pair["output"] for pair in task["test"]] for t, task in test_puzzles.items() if all("output" in p for p in task["test"])}


def score_submission_per_task(submission: Mapping[str, Sequence[Mapping]], solutions: Mapping[str, Sequence]) -> dict[str, float]:
    """Fraction of each solved task's test inputs answered right by either attempt."""
    scores = {}
    for task_id, outputs in solutions.items():
        entries = submission.get(task_id, [])
        right = 0
        for j, expected in enumerate(outputs):
            if j < len(entries):
                attempts = [entries[j].get(key) for key in ATTEMPT_KEYS]
                right += any(a is not None and _as_list(a) == _as_list(expected) for a in attempts)
        scores[task_id] = right / len(outputs)
    return scores


def score_submission(submission: Mapping[str, Sequence[Mapping]], solutions: Mapping[str, Sequence]) -> float:
    """Kaggle score as a MEAN over the solutions' tasks (0..1); equals the evaluator's ARC/pass@2."""
    per_task = score_submission_per_task(submission, solutions)
    return float(np.mean(list(per_task.values()))) if per_task else 0.0
