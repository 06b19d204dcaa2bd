"""Kaggle submission format and the Kaggle scoring rule on hand-made files."""

import json

import numpy as np
import pytest

from evaluators.submission import (
    attempts_to_submission,
    score_submission,
    score_submission_per_task,
    solutions_from_test_puzzles,
    write_submission,
)


def test_format_padding_and_fallback(tmp_path):
    attempts = {"b": [[np.array([[1]]), np.array([[2]])], [np.array([[3]])]], "a": [[]]}
    written = write_submission(tmp_path / "s.json", attempts)
    on_disk = json.loads((tmp_path / "s.json").read_text())
    assert on_disk == written
    assert list(on_disk) == ["b", "a"]
    assert on_disk["b"] == [{"attempt_1": [[1]], "attempt_2": [[2]]}, {"attempt_1": [[3]], "attempt_2": [[3]]}]
    assert on_disk["a"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    assert not [p for p in tmp_path.iterdir() if p.name != "s.json"]  # no temporary left behind


def test_kaggle_score_any_attempt_fraction_per_task_mean_over_tasks():
    solutions = {"x": [[[1]], [[2]]], "y": [[[3, 3]]], "z": [[[4]]]}
    submission = attempts_to_submission(
        {
            "x": [[[[0]], [[1]]], [[[5]], [[6]]]],  # first input right by attempt 2, second wrong -> 0.5
            "y": [[[[3, 3]]]],  # right -> 1
            # z missing -> 0
        }
    )
    assert score_submission_per_task(submission, solutions) == {"x": 0.5, "y": 1.0, "z": 0.0}
    assert score_submission(submission, solutions) == pytest.approx(1.5 / 3)


def test_third_attempts_and_shape_mismatches_do_not_count():
    solutions = {"x": [[[1, 1]]]}
    sub = {"x": [{"attempt_1": [[1], [1]], "attempt_2": [[0, 0]], "attempt_3": [[1, 1]]}]}
    assert score_submission(sub, solutions) == 0.0


def test_solutions_from_test_puzzles_skips_unknown_outputs():
    puzzles = {"a": {"train": [], "test": [{"input": [[0]], "output": [[1]]}]}, "b": {"train": [], "test": [{"input": [[0]]}]}}
    assert solutions_from_test_puzzles(puzzles) == {"a": [[[1]]]}
