"""Sudoku and maze CSVs in the Hub's format (``source,question,answer,rating``), made from scratch.

Sudokus: a solved base pattern, then random validity-preserving symmetries (digit relabelling,
transpose, band/stack and row/column-within-band shuffles), written here with plain loops
independently of the builder; clues removed at random. Mazes: random walls, S and G placed on
open cells, and one BFS shortest path drawn as ``o`` (mazes without a path are redrawn).
"""

from __future__ import annotations

import csv
from collections import deque
from pathlib import Path

import numpy as np

BASE = np.array([[(3 * (r % 3) + r // 3 + c) % 9 + 1 for c in range(9)] for r in range(9)])


def random_solution(rng: np.random.Generator) -> np.ndarray:
    grid = BASE.copy()
    relabel = [0] + list(rng.permutation(9) + 1)
    grid = np.array([[relabel[v] for v in row] for row in grid])
    if rng.random() < 0.5:
        grid = grid.T
    rows = [3 * b + r for b in rng.permutation(3) for r in rng.permutation(3)]
    cols = [3 * b + c for b in rng.permutation(3) for c in rng.permutation(3)]
    return grid[rows][:, cols]


def is_valid_sudoku(grid: np.ndarray) -> bool:
    """Every row, column and 3x3 box holds 1..9 exactly once (plain loops, for the tests)."""
    grid = np.asarray(grid).reshape(9, 9)
    units = [grid[r, :] for r in range(9)] + [grid[:, c] for c in range(9)]
    units += [grid[3 * br:3 * br + 3, 3 * bc:3 * bc + 3].ravel() for br in range(3) for bc in range(3)]
    return all(sorted(u.tolist()) == list(range(1, 10)) for u in units)


def sudoku_rows(n: int, seed: int, blank_fraction: float = 0.6) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        answer = random_solution(rng).ravel()
        question = np.where(rng.random(81) < blank_fraction, 0, answer)
        rows.append([f"gen{i}", "".join("." if d == 0 else str(d) for d in question),
                     "".join(map(str, answer)), str(int(rng.integers(0, 100)))])
    return rows


def shortest_path(grid: list[list[str]]) -> list[tuple[int, int]] | None:
    """Cells strictly between S and G on one shortest 4-connected path through non-walls (BFS)."""
    n = len(grid)
    start = next((r, c) for r in range(n) for c in range(n) if grid[r][c] == "S")
    prev = {start: None}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        if grid[r][c] == "G":
            path, cell = [], prev[(r, c)]
            while cell != start:
                path.append(cell)
                cell = prev[cell]
            return path[::-1]
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nr, nc = r + dr, c + dc
            if 0 <= nr < n and 0 <= nc < n and grid[nr][nc] != "#" and (nr, nc) not in prev:
                prev[(nr, nc)] = (r, c)
                queue.append((nr, nc))
    return None


def maze_rows(n: int, side: int, seed: int, wall_fraction: float = 0.3) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        grid = [["#" if rng.random() < wall_fraction else " " for _ in range(side)] for _ in range(side)]
        open_cells = [(r, c) for r in range(side) for c in range(side) if grid[r][c] == " "]
        if len(open_cells) < 2:
            continue
        s, g = rng.choice(len(open_cells), size=2, replace=False)
        grid[open_cells[s][0]][open_cells[s][1]] = "S"
        grid[open_cells[g][0]][open_cells[g][1]] = "G"
        path = shortest_path(grid)
        if path is None:
            continue
        answer = [row[:] for row in grid]
        for r, c in path:
            answer[r][c] = "o"
        rows.append([f"maze{len(rows)}", "".join("".join(r) for r in grid), "".join("".join(r) for r in answer),
                     str(len(path))])
    return rows


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "question", "answer", "rating"])
        writer.writerows(rows)
    return path


def write_sudoku_source(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    write_csv(folder / "train.csv", sudoku_rows(n_train, seed))
    write_csv(folder / "test.csv", sudoku_rows(n_test, seed + 1))
    return folder


def write_maze_source(folder: Path, n_train: int, n_test: int, side: int = 8, seed: int = 0) -> Path:
    write_csv(folder / "train.csv", maze_rows(n_train, side, seed))
    write_csv(folder / "test.csv", maze_rows(n_test, side, seed + 1))
    return folder
