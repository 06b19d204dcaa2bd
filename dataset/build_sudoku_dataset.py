"""Build Sudoku-Extreme in the TRM/HRM reference format (seq_len 81, vocab 11).

    python -m dataset.build_sudoku_dataset --output-dir data/sudoku-extreme-1k-aug-1000 \\
        --subsample-size 1000 --num-aug 1000                  # the TRM README's dataset
    python dataset/build_sudoku_dataset.py --output-dir data/sudoku-extreme-full   # all 3.8M, no copies
    python -m dataset.build_sudoku_dataset --source my_csvs --output-dir data/x   # my_csvs/{train,test}.csv

Data: ``train.csv`` / ``test.csv`` (``source,question,answer,rating``; 81 characters, ``.`` for a
blank) from the Hub dataset ``--source-repo`` through huggingface_hub's cache (HF_HUB_OFFLINE
works once it is cached), or from ``--source DIR``. ``--min-difficulty N`` keeps rows with
rating >= N on both splits; ``--subsample-size`` draws that many train rows. Each kept train puzzle
becomes a group of ``1 + --num-aug`` one-example puzzles, the first unchanged, the others shuffled
as the reference does (digits 1-9 permuted, transpose with probability 1/2, bands and the rows
within each band shuffled, stacks and columns likewise). The test split is never augmented and
keeps the CSV order. Cells are stored as digit + 1 (blank = 1, PAD = 0).

Unlike the reference (unseeded global RNG, one Python call per copy) every draw comes from
``--seed``: copies are drawn per block of groups from a generator named by the block, in whole
arrays, and the blocks are written in place by worker processes, so the output is byte-identical
for any ``--workers`` and memory stays at a few blocks.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script (python dataset/build_sudoku_dataset.py), as the TRM README does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataset.build_arc_augment import stable_rng
from dataset.build_arc_writer import FileHandles, pwrite_all
from dataset.puzzle_csv import (PuzzleCsv, PuzzleCsvError, create_split, csv_path, decode, read_puzzle_csv,
                                select_rows, worker_count, write_identifiers)
from utils.errors import run_command
from utils.io import atomic_directory

SEQ_LEN = 81
VOCAB_SIZE = 11  # PAD + digits 0 (blank) .. 9
QUESTION_CHARSET = ".0123456789"  # "0" is a blank too: the reference replaces "." by "0"
ANSWER_CHARSET = "123456789"
ROWS_PER_BLOCK = 16384  # examples built and written at a time per worker



@dataclass
class SudokuTransforms:
    """Per copy: ``digit_map`` [m, 10] (0 fixed), ``transpose`` [m], ``row_perm`` / ``col_perm`` [m, 9].

    Copy = ``digit_map[(board.T if transpose else board)[row_perm][:, col_perm]]``, the reference's
    ``shuffle_sudoku`` applied to a whole array at once.
    """

    digit_map: np.ndarray
    transpose: np.ndarray
    row_perm: np.ndarray
    col_perm: np.ndarray

    def source_cells(self) -> np.ndarray:
        """[m, 81]: the cell of the original each cell of the copy comes from."""
        # row i, column j of the copy = original cell row_perm[i] * 9 + col_perm[j], or with the
        # factors swapped when transposed; a broadcast multiply-add, no gathers
        row_step = np.where(self.transpose, 1, 9)[:, None, None]
        cells = self.row_perm[:, :, None] * row_step + self.col_perm[:, None, :] * (10 - row_step)
        return cells.reshape(len(self.transpose), SEQ_LEN)

    def apply(self, *boards: np.ndarray) -> tuple[np.ndarray, ...]:
        """Copies of each of ``boards`` [m, 81] (digits 0..9), one transform per row."""
        rows = np.arange(len(self.transpose))[:, None]
        cells = self.source_cells() + 81 * rows  # indices into the flattened boards
        digit_map = self.digit_map.ravel()
        return tuple(digit_map[b.ravel()[cells] + 10 * rows].astype(b.dtype) for b in boards)


def _band_perm(rng: np.random.Generator, m: int) -> np.ndarray:
    """[m, 9] permutations that shuffle the 3 bands and the 3 lines inside each band."""
    bands = np.argsort(rng.random((m, 3)), axis=1)
    within = np.argsort(rng.random((m, 3, 3)), axis=2)
    return (bands[:, :, None] * 3 + within).reshape(m, 9)


def draw_transforms(rng: np.random.Generator, m: int) -> SudokuTransforms:
    digits = np.argsort(rng.random((m, 9)), axis=1) + 1
    digit_map = np.concatenate([np.zeros((m, 1), dtype=np.intp), digits], axis=1)
    transpose = rng.random(m) < 0.5
    return SudokuTransforms(digit_map, transpose, _band_perm(rng, m), _band_perm(rng, m))


def blocks(n_groups: int, num_aug: int) -> list[tuple[int, int]]:
    """Group ranges [start, stop) built together; depends only on the sizes (never on workers)."""
    per = max(1, ROWS_PER_BLOCK // (1 + num_aug))
    return [(s, min(s + per, n_groups)) for s in range(0, n_groups, per)]


def block_transforms(seed: int, start: int, stop: int, num_aug: int) -> SudokuTransforms:
    """The copies' transforms of groups [start, stop), group-major (num_aug rows per group)."""
    return draw_transforms(stable_rng(seed, "sudoku-augment", str(start)), (stop - start) * num_aug)


# Set in the parent before the pool forks (or in-process with one worker).
_BOARDS: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_HANDLES = FileHandles()


def _write_block(job: tuple) -> int:
    split, start, stop, num_aug, seed, targets = job
    questions, answers = (b[start:stop] for b in _BOARDS[split])
    group = 1 + num_aug
    if num_aug:
        t = block_transforms(seed, start, stop, num_aug)
        originals = np.repeat(np.arange(stop - start), num_aug)
        copies = t.apply(questions[originals], answers[originals])
        q_out, a_out = (np.empty((stop - start, group, SEQ_LEN), dtype=np.uint8) for _ in range(2))
        for out, original, copy in zip((q_out, a_out), (questions, answers), copies):
            out[:, 0] = original  # each group: the original first, then its copies
            out[:, 1:] = copy.reshape(stop - start, num_aug, SEQ_LEN)
        q_out, a_out = q_out.reshape(-1, SEQ_LEN), a_out.reshape(-1, SEQ_LEN)
    else:
        q_out, a_out = questions, answers
    written = 0
    for (path, offset), rows in zip(targets, (q_out, a_out)):
        written += pwrite_all(_HANDLES.get(path), rows + np.uint8(1), offset + start * group * SEQ_LEN)
    return written


def load_split(split: str, source_repo: str, source_dir: str | None) -> tuple[np.ndarray, np.ndarray, PuzzleCsv]:
    """(questions, answers) as digits 0..9 [n, 81] uint8 (0 = blank), checked; and the raw table."""
    path = csv_path(split, source_repo, source_dir)
    table = read_puzzle_csv(path, SEQ_LEN)
    q = decode(table.questions, QUESTION_CHARSET, [0] + list(range(10)), path, "question")
    a = decode(table.answers, ANSWER_CHARSET, list(range(1, 10)), path, "answer")
    clash = (q != 0) & (q != a)
    if clash.any():
        row, cell = np.argwhere(clash)[0]
        raise PuzzleCsvError(f"{path}: row {row + 1}: clue {q[row, cell]} at cell {cell} (row {cell // 9 + 1}, "
                             f"column {cell % 9 + 1}) contradicts the solution's {a[row, cell]}")
    return q, a, table


@dataclass
class SudokuBuildConfig:
    output_dir: str = "data/sudoku-extreme-full"
    source_repo: str = "sapientinc/sudoku-extreme"
    source: str | None = None
    subsample_size: int | None = None
    min_difficulty: int | None = None
    num_aug: int = 0
    seed: int = 42
    workers: int | None = None
    progress: bool = True


def build_sudoku_dataset(cfg: SudokuBuildConfig) -> dict:
    started = time.perf_counter()
    if cfg.num_aug < 0 or (cfg.subsample_size is not None and cfg.subsample_size < 0):
        raise PuzzleCsvError("--num-aug and --subsample-size must be >= 0")
    stats = {}
    for split in ("train", "test"):
        q, a, table = load_split(split, cfg.source_repo, cfg.source)
        rows = select_rows(table, cfg.min_difficulty, cfg.subsample_size if split == "train" else None,
                           stable_rng(cfg.seed, "subsample", split))
        _BOARDS[split] = (q[rows], a[rows])
        stats[split] = {"groups": len(rows), "copies": cfg.num_aug if split == "train" else 0}
    jobs_total = sum(len(blocks(s["groups"], s["copies"])) for s in stats.values())
    workers = worker_count(cfg.workers, jobs_total)
    pool = None
    try:
        with atomic_directory(cfg.output_dir) as out:
            jobs = []
            for split, s in stats.items():
                targets = create_split(out / split, s["groups"], 1 + s["copies"], SEQ_LEN, VOCAB_SIZE)
                s["examples"] = s["groups"] * (1 + s["copies"])
                jobs += [(split, b0, b1, s["copies"], cfg.seed, (targets["inputs"], targets["labels"]))
                         for b0, b1 in blocks(s["groups"], s["copies"])]
            write_identifiers(out)
            if workers > 1:  # forked after the boards are loaded: workers share them without copying
                pool = mp.get_context("fork").Pool(workers)
                results = pool.imap_unordered(_write_block, jobs)
            else:
                results = map(_write_block, jobs)
            for _ in tqdm(results, total=len(jobs), desc="writing", disable=not cfg.progress, leave=False):
                pass
            _HANDLES.close()
    finally:
        if pool is not None:
            pool.terminate()
        _HANDLES.close()
        _BOARDS.clear()
    return {"splits": stats, "seconds": time.perf_counter() - started, "output_dir": cfg.output_dir}


def format_summary(summary: dict) -> str:
    lines = [f"Built {summary['output_dir']} in {summary['seconds']:.1f} s"]
    for split, s in summary["splits"].items():
        lines.append(f"  {split:5s}: {s['groups']:>9,} puzzles x {1 + s['copies']} = {s['examples']:>11,} examples")
    return "\n".join(lines)


def add_common_args(p: argparse.ArgumentParser, source_repo: str, output_dir: str) -> None:
    p.add_argument("--source-repo", default=source_repo, help=f"Hub dataset repo (default {source_repo})")
    p.add_argument("--source", default=None, metavar="DIR", help="read DIR/train.csv and DIR/test.csv instead of the Hub")
    p.add_argument("--output-dir", default=output_dir)
    p.add_argument("--subsample-size", type=int, default=None, help="train puzzles drawn at random (default all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def parse_args(argv: list[str] | None = None) -> SudokuBuildConfig:
    p = argparse.ArgumentParser(prog="python -m dataset.build_sudoku_dataset", description=__doc__.split("\n\n")[0])
    add_common_args(p, SudokuBuildConfig.source_repo, SudokuBuildConfig.output_dir)
    p.add_argument("--min-difficulty", type=int, default=None, help="keep rows with rating >= N (both splits)")
    p.add_argument("--num-aug", type=int, default=0, help="shuffled copies per train puzzle (default 0)")
    p.add_argument("--workers", type=int, default=None, help="writer processes (default: all cores)")
    return SudokuBuildConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_command(lambda: print(format_summary(build_sudoku_dataset(cfg))))  # bad input: one line, exit code 2


if __name__ == "__main__":
    sys.exit(main())
