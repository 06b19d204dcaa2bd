"""Reading the Hub's puzzle CSVs (Sudoku-Extreme, Maze-Hard) and writing single-example splits.

Both datasets on the Hub (``sapientinc/sudoku-extreme``, ``sapientinc/maze-30x30-hard-1k``) are a
``train.csv`` and a ``test.csv`` with the columns ``source,question,answer,rating``; question and
answer are fixed-length strings over a small charset. They are read here into uint8 arrays of
character codes, checked as a whole (a bad row stops the build with its file and row number), and
the splits are written in the reference format: one example per puzzle, ``1 + copies`` puzzles
per group, all puzzle identifiers 0 (``identifiers.json`` = ``["<blank>"]``).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset.arc_grid import BLANK_IDENTIFIER
from dataset.build_arc_writer import create_npy
from dataset.metadata import PuzzleDatasetMetadata

CSV_COLUMNS = ("source", "question", "answer", "rating")
_ROWS_PER_BLOCK = 65536  # rows turned into numpy at a time while reading


class PuzzleCsvError(ValueError):
    """Bad input: the message names the file and the row; the CLI prints it and exits 2."""


@dataclass
class PuzzleCsv:
    path: str
    questions: np.ndarray  # uint8 [n, length] character codes
    answers: np.ndarray  # uint8 [n, length]
    ratings: np.ndarray  # int64 [n]; -1 where the rating is not an integer
    rating_errors: list[int]  # 1-based rows whose rating is not an integer


def csv_path(split: str, source_repo: str, source_dir: str | None) -> str:
    """``<split>.csv`` from a local folder, or from the Hub's cache (downloading when online)."""
    if source_dir is not None:
        path = Path(source_dir) / f"{split}.csv"
        if not path.is_file():
            raise PuzzleCsvError(f"{path}: no such file")
        return str(path)
    from huggingface_hub import hf_hub_download

    try:  # honours HF_HUB_OFFLINE, HF_HUB_CACHE and HF_TOKEN like the reference's call
        return hf_hub_download(source_repo, f"{split}.csv", repo_type="dataset")
    except Exception as exc:  # offline without a cached copy, unknown repo, network down
        offline = " (HF_HUB_OFFLINE is set and the file is not in the cache)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise PuzzleCsvError(f"{source_repo}: {split}.csv: cannot get it from the Hub{offline}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def _to_codes(strings: list[str], length: int, path: str, first_row: int, column: str) -> np.ndarray:
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    bad = np.flatnonzero(lengths != length)
    if len(bad):
        k = int(bad[0])
        raise PuzzleCsvError(f"{path}: row {first_row + k}: {column} has {lengths[k]} characters, expected {length}")
    blob = "".join(strings).encode("utf-8", "surrogateescape")
    if len(blob) != length * len(strings):  # a character outside ASCII somewhere
        k = next(i for i, s in enumerate(strings) if not s.isascii())
        char = next(c for c in strings[k] if not c.isascii())
        raise PuzzleCsvError(f"{path}: row {first_row + k}: {column} has character {char!r} outside the charset")
    return np.frombuffer(blob, dtype=np.uint8).reshape(len(strings), length)


def read_puzzle_csv(path: str, length: int | None = None, square: bool = False) -> PuzzleCsv:
    """Read ``source,question,answer,rating`` rows; ``length`` None = the first row's length.

    With ``square`` the length must be a perfect square (maze grids). Row numbers in messages count
    data rows from 1 (the header is row 0).
    """
    questions, answers, ratings, rating_errors = [], [], [], []
    block_q: list[str] = []
    block_a: list[str] = []
    block_start = 1
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise PuzzleCsvError(f"{path}: empty file (expected the header {','.join(CSV_COLUMNS)})")
        for row_no, row in enumerate(reader, start=1):
            if len(row) != 4:
                raise PuzzleCsvError(f"{path}: row {row_no}: {len(row)} columns, expected 4 ({','.join(CSV_COLUMNS)})")
            _, q, a, r = row
            if length is None:
                length = len(q)
                side = math.isqrt(length)
                if square and side * side != length:
                    raise PuzzleCsvError(f"{path}: row {row_no}: question has {length} characters, not a square grid")
            block_q.append(q)
            block_a.append(a)
            try:
                ratings.append(int(r))
            except ValueError:
                ratings.append(-1)
                rating_errors.append(row_no)
            if len(block_q) == _ROWS_PER_BLOCK:
                questions.append(_to_codes(block_q, length, path, block_start, "question"))
                answers.append(_to_codes(block_a, length, path, block_start, "answer"))
                block_start += len(block_q)
                block_q, block_a = [], []
    if block_q:
        questions.append(_to_codes(block_q, length, path, block_start, "question"))
        answers.append(_to_codes(block_a, length, path, block_start, "answer"))
    if not questions:
        raise PuzzleCsvError(f"{path}: no data rows")
    return PuzzleCsv(path, np.concatenate(questions), np.concatenate(answers), np.array(ratings, dtype=np.int64),
                     rating_errors)


def check_charset(codes: np.ndarray, charset: str, path: str, column: str) -> None:
    """Raise naming the first row and character of ``codes`` outside ``charset``."""
    allowed = np.zeros(256, dtype=bool)
    allowed[np.frombuffer(charset.encode(), dtype=np.uint8)] = True
    bad = ~allowed[codes]
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PuzzleCsvError(f"{path}: row {row + 1}: {column} has character {chr(codes[row, col])!r} at position "
                             f"{col} outside the charset {charset!r}")


def select_rows(table: PuzzleCsv, min_difficulty: int | None, subsample_size: int | None,
                rng: np.random.Generator) -> np.ndarray:
    """Row indices kept: rating >= min_difficulty (both splits), then a random subsample (train only).

    The subsample is drawn without replacement and kept in drawn order, as the reference's
    ``np.random.choice`` does, from a seeded generator instead of the global one.
    """
    rows = np.arange(len(table.questions))
    if min_difficulty is not None:
        if table.rating_errors:
            raise PuzzleCsvError(f"{table.path}: row {table.rating_errors[0]}: rating is not an integer "
                                 "(needed by --min-difficulty)")
        rows = rows[table.ratings >= min_difficulty]
    if subsample_size is not None and subsample_size < len(rows):
        rows = rows[rng.choice(len(rows), size=subsample_size, replace=False)]
    return rows


def create_split(split_dir: Path, n_groups: int, group_size: int, seq_len: int, vocab_size: int) -> dict:
    """Write the index arrays and dataset.json of a split of ``n_groups`` x ``group_size`` one-example
    puzzles, and pre-size inputs/labels .npy files; returns {"inputs"/"labels": (path, data offset)}."""
    split_dir.mkdir(parents=True)
    n = n_groups * group_size
    np.save(split_dir / "all__puzzle_identifiers.npy", np.zeros(n, dtype=np.int32))
    np.save(split_dir / "all__puzzle_indices.npy", np.arange(n + 1, dtype=np.int32))
    np.save(split_dir / "all__group_indices.npy", np.arange(0, n + 1, group_size, dtype=np.int32))
    # total_puzzles = groups and mean_puzzle_examples = 1, exactly as the reference builders write them.
    PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size, seq_len=seq_len,
                          num_puzzle_identifiers=1, total_groups=n_groups, mean_puzzle_examples=1,
                          total_puzzles=n_groups, sets=["all"]).save(split_dir)
    out = {}
    for name in ("inputs", "labels"):
        path = split_dir / f"all__{name}.npy"
        out[name] = (str(path), create_npy(path, (n, seq_len), np.uint8))
    return out


def write_identifiers(out_dir: Path) -> None:
    (out_dir / "identifiers.json").write_text(f'["{BLANK_IDENTIFIER}"]')


def worker_count(requested: int | None, jobs: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or cores, jobs))
