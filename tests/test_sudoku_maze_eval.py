"""Sudoku and Maze evaluators against hand-worked cases, and their gathering over two ranks."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evaluators.maze import MazeEvaluator, maze_path_scores
from evaluators.registry import build_evaluator, default_evaluator_name
from evaluators.sudoku import SudokuEvaluator
from tests.puzzle_csv_fixtures import BASE, maze_rows

SUDOKU_META = SimpleNamespace(seq_len=81, vocab_size=11, pad_id=0, blank_identifier_id=0)


def tokens(grid) -> np.ndarray:
    return np.asarray(grid).ravel() + 1  # digit d -> d + 1, blank 0 -> 1


def swap(grid: np.ndarray, a: int, b: int) -> np.ndarray:
    out = grid.copy()
    out[grid == a], out[grid == b] = b, a
    return out


def feed(evaluator, inputs, labels, preds, pad_rows: int = 0) -> None:
    inputs, labels, preds = (torch.as_tensor(np.stack(x)).long() for x in (inputs, labels, preds))
    if pad_rows:  # what the test loader appends to its last batch
        width = inputs.shape[1]
        inputs = torch.cat([inputs, torch.zeros(pad_rows, width, dtype=torch.long)])
        labels = torch.cat([labels, torch.full((pad_rows, width), -100)])
        preds = torch.cat([preds, torch.randint(0, 11, (pad_rows, width))])
    evaluator.update_batch({"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(len(inputs))},
                           {"preds": preds})


def test_sudoku_hand_worked(tmp_path):
    label = BASE
    puzzle = np.where(np.isin(label, (1, 2)), 0, label)  # 18 blanks: the 1s and 2s
    other = swap(label, 1, 2)  # also solves the puzzle: a valid grid that differs from the label
    duplicate = label.copy()
    duplicate[np.argwhere(label == 1)[0][0], np.argwhere(label == 1)[0][1]] = 2  # one blank wrong, a repeated 2
    clue_changed = swap(label, 3, 4)  # a valid grid, but 3s and 4s are clues
    evaluator = SudokuEvaluator("unused", SUDOKU_META, ["<blank>"])
    feed(evaluator, [tokens(puzzle)] * 2, [tokens(label)] * 2, [tokens(label), tokens(other)])
    feed(evaluator, [tokens(puzzle)] * 2, [tokens(label)] * 2, [tokens(duplicate), tokens(clue_changed)], pad_rows=3)
    metrics = evaluator.result(str(tmp_path))
    assert metrics == pytest.approx({
        "Sudoku/exact_accuracy": 1 / 4,
        "Sudoku/valid": 2 / 4,  # the label and the swapped grid
        "Sudoku/valid_not_label": 1 / 4,
        "Sudoku/blank_cell_accuracy": (18 + 0 + 17 + 18) / 72,
        "Sudoku/cell_accuracy": (81 + 63 + 80 + 63) / 324,
        "Sudoku/num_puzzles": 4.0,
    })
    saved = np.load(tmp_path / "predictions.npz", allow_pickle=False)
    assert saved["exact"].tolist() == [True, False, False, False]
    assert saved["valid"].tolist() == [True, True, False, False]
    assert (saved["preds"][1] == tokens(other)).all() and saved["inputs"].dtype == np.uint8
    page = (tmp_path / "report.html").read_text()
    assert "test puzzle 1 &mdash; valid, differs from the label" in page and "test puzzle 2 &mdash; wrong" in page
    assert page.count('class="clue bad"') == 18  # the changed clues of puzzle 3, marked in its prediction


# S at (0,0), G at (3,3); the label's path is one of several shortest ones (5 cells).
MAZE = ["S  #",
        "   #",
        "#   ",
        "## G"]
LABEL_PATH = [(0, 1), (1, 1), (1, 2), (2, 2), (2, 3)]


def maze_tokens(path_cells=(), base=MAZE) -> np.ndarray:
    grid = [list(row) for row in base]
    for r, c in path_cells:
        grid[r][c] = "o"
    return np.array(["# SGo".index(ch) + 1 for row in grid for ch in row])


def test_maze_hand_worked(tmp_path):
    cases = {
        "exact": LABEL_PATH,
        "other shortest": [(1, 0), (1, 1), (1, 2), (2, 2), (3, 2)],
        "gap": [(0, 1), (1, 1), (2, 2), (2, 3)],
        "longer": [(1, 0), (1, 1), (0, 1), (0, 2), (1, 2), (2, 2), (2, 3)],
        "through a wall": LABEL_PATH + [(0, 3)],
    }
    meta = SimpleNamespace(seq_len=16, vocab_size=6, pad_id=0)
    evaluator = MazeEvaluator("unused", meta, ["<blank>"])
    n = len(cases)
    feed(evaluator, [maze_tokens()] * n, [maze_tokens(LABEL_PATH)] * n, [maze_tokens(p) for p in cases.values()],
         pad_rows=1)
    metrics = evaluator.result(str(tmp_path))
    assert metrics["Maze/exact_accuracy"] == pytest.approx(1 / 5)
    assert metrics["Maze/path_valid"] == pytest.approx(3 / 5)  # exact, other shortest, longer
    assert metrics["Maze/path_optimal"] == pytest.approx(2 / 5)  # exact, other shortest
    saved = np.load(tmp_path / "predictions.npz", allow_pickle=False)
    assert saved["path_valid"].tolist() == [True, True, False, True, False]
    assert saved["path_optimal"].tolist() == [True, True, False, False, False]
    assert "valid but longer path" in (tmp_path / "report.html").read_text()


def test_maze_path_scores_on_generated_mazes():
    """Every BFS label is a valid shortest path; removing any one of its cells breaks it."""
    rows = maze_rows(30, side=9, seed=7)
    enc = lambda s: np.array(["# SGo".index(ch) + 1 for ch in s])  # noqa: E731
    q = np.stack([enc(r[1]) for r in rows])
    a = np.stack([enc(r[2]) for r in rows])
    valid, optimal = maze_path_scores(q, a, a)
    assert valid.all() and optimal.all()
    rng = np.random.default_rng(0)
    broken = a.copy()
    for i in range(len(rows)):
        cells = np.flatnonzero(a[i] == 5)
        if len(cells):
            broken[i, rng.choice(cells)] = 2
    has_path = (a == 5).any(axis=1)
    valid, _ = maze_path_scores(q, a, broken)
    assert not valid[has_path].any() and valid[~has_path].all()  # S next to G needs no path cells


def test_registry_and_default_names(tmp_path):
    assert isinstance(build_evaluator("sudoku", str(tmp_path), SUDOKU_META, ["<blank>"]), SudokuEvaluator)
    assert default_evaluator_name(str(tmp_path), SUDOKU_META) == "sudoku"
    assert default_evaluator_name(str(tmp_path), SimpleNamespace(seq_len=900, vocab_size=6)) == "maze"
    (tmp_path / "test_puzzles.json").write_text("{}")
    assert default_evaluator_name(str(tmp_path), SUDOKU_META) == "arc"
    with pytest.raises(ValueError, match="seq_len 900"):
        SudokuEvaluator("unused", SimpleNamespace(seq_len=900, vocab_size=6), ["<blank>"])


def _rank_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        inputs, labels, preds = _global_rows()
        evaluator = SudokuEvaluator("unused", SUDOKU_META, ["<blank>"])
        global_batch, local = 4, 2
        for start in range(0, len(inputs), global_batch):  # as the test loader slices a global batch
            lo = start + rank * local
            rows = [x[lo:lo + local].astype(np.int64) for x in (inputs, labels, preds)]
            pad = local - len(rows[0])
            fill = (0, -100, 0)  # padding rows: PAD inputs, ignored labels, whatever the model predicts
            tensors = [torch.as_tensor(np.concatenate([r, np.full((pad, 81), f)])) for r, f in zip(rows, fill)]
            evaluator.update_batch({"inputs": tensors[0], "labels": tensors[1]}, {"preds": tensors[2]})
        evaluator.result(out if rank == 0 else None)
    finally:
        dist.destroy_process_group()


def _global_rows():
    rng = np.random.default_rng(1)
    n = 11  # 3 global batches of 4, the last one padded
    labels = np.stack([tokens(swap(BASE, *rng.choice(np.arange(1, 10), 2, replace=False))) for _ in range(n)])
    inputs = np.where(rng.random((n, 81)) < 0.5, 1, labels)
    preds = np.where(rng.random((n, 81)) < 0.1, 2, labels)
    return inputs, labels, preds


def test_two_ranks_gather_in_test_split_order(tmp_path):
    import socket

    import torch.multiprocessing as tmp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp.spawn(_rank_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    saved = np.load(Path(tmp_path) / "predictions.npz", allow_pickle=False)
    inputs, labels, preds = _global_rows()
    assert (saved["inputs"] == inputs).all() and (saved["labels"] == labels).all() and (saved["preds"] == preds).all()
    assert saved["exact"].tolist() == (preds == labels).all(axis=1).tolist()
