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
from utils.errors import UserError

CSV_COLUMNS = ("source", "question", "answer", "rating")
_ROWS_PER_BLOCK = 65536  # rows turned into numpy at a time while reading


class PuzzleCsvError(UserError):
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
    data rows from 1 (the header is row 0). A plain file (ASCII, no quotes, 4 fields and equal
    lengths on every line: the Hub's files) is split with numpy in whole arrays; anything else goes
    through the csv module row by row, which also finds the row to name in an error.
    """
    table = _read_regular(path, Path(path).read_bytes(), length, square)
    return table if table is not None else _read_rows(path, length, square)


def _read_regular(path: str, data: bytes, length: int | None, square: bool) -> PuzzleCsv | None:
    """The whole file at once when every line is ``source,question,answer,rating`` plainly; else None."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if not len(buf) or b'"' in data or buf.max() >= 128:
        return None
    ends = _positions(buf, "\n")
    if not len(ends) or ends[-1] != len(buf) - 1:
        ends = np.append(ends, len(buf))  # no newline after the last line
    starts = np.concatenate([[0], ends[:-1] + 1])[1:]  # data lines (line 0 is the header)
    ends = ends[1:]
    ends = ends - (buf[np.maximum(ends - 1, 0)] == ord("\r"))  # CRLF line endings
    commas = _positions(buf, ",")
    first = np.searchsorted(commas, starts)
    if not len(starts) or (np.searchsorted(commas, ends) - first != 3).any():
        return None
    c0, c1, c2 = commas[first], commas[first + 1], commas[first + 2]
    q_len, a_len = c1 - c0 - 1, c2 - c1 - 1
    length = int(q_len[0]) if length is None else length
    if (square and math.isqrt(length) ** 2 != length) or (q_len != length).any() or (a_len != length).any():
        return None
    windows = np.lib.stride_tricks.sliding_window_view(buf, length)  # windows[i] = buf[i:i + length], no copy
    questions, answers = windows[c0 + 1], windows[c1 + 1]
    ratings, rating_errors = _parse_ratings(buf, c2 + 1, ends)
    return PuzzleCsv(path, questions, answers, ratings, rating_errors)


def _positions(buf: np.ndarray, char: str, chunk: int = 1 << 22) -> np.ndarray:
    """Offsets of ``char`` in ``buf``, found a few MB at a time (a whole-file mask costs a byte per byte)."""
    code = ord(char)
    return np.concatenate([np.flatnonzero(buf[i:i + chunk] == code) + i for i in range(0, len(buf), chunk)])


def _parse_ratings(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Plain digit strings as int64 in whole arrays; other fields through int() one by one."""
    widths = ends - starts
    width = int(widths.max(initial=0))
    ratings = np.full(len(starts), -1, dtype=np.int64)
    plain = (widths >= 1) & (widths <= 18)
    if width:
        pos = np.minimum(starts[:, None] + np.arange(width), len(buf) - 1)
        inside = np.arange(width) < widths[:, None]
        digits = buf[pos].astype(np.int64) - ord("0")
        plain &= ((digits >= 0) & (digits <= 9) | ~inside).all(axis=1)
        place = np.where(inside, 10 ** np.clip(widths[:, None] - 1 - np.arange(width), 0, 18), 0)
        ratings = np.where(plain, (np.where(inside, digits, 0) * place).sum(axis=1), -1)
    rating_errors = []
    for k in np.flatnonzero(~plain).tolist():  # signs, spaces, empty fields: whatever int() says
        try:
            ratings[k] = int(bytes(buf[starts[k]:ends[k]]).decode())
        except ValueError:
            rating_errors.append(k + 1)
    return ratings, rating_errors


def _read_rows(path: str, length: int | None, square: bool) -> PuzzleCsv:
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


def decode(codes: np.ndarray, charset: str, values: list[int], path: str, column: str) -> np.ndarray:
    """Character codes -> ``values[charset.index(char)]`` (uint8), in one table lookup; raises naming
    the first row and character outside ``charset``."""
    lut = np.full(256, 255, dtype=np.uint8)
    lut[np.frombuffer(charset.encode(), dtype=np.uint8)] = values
    out = lut[codes]
    bad = out == 255
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PuzzleCsvError(f"{path}: row {row + 1}: {column} has character {chr(codes[row, col])!r} at position "
                             f"{col} outside the charset {charset!r}")
    return out


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
