"""Build Maze-Hard in the TRM/HRM reference format (30x30 grids: seq_len 900, vocab 6).

    python -m dataset.build_maze_dataset                       # data/maze-30x30-hard-1k, as the TRM README
    python dataset/build_maze_dataset.py --aug                 # + the 8 dihedral transforms of each train maze
    python -m dataset.build_maze_dataset --source my_csvs --output-dir data/x   # my_csvs/{train,test}.csv

Data: ``train.csv`` / ``test.csv`` (``source,question,answer,rating``; a square grid over the
charset ``# SGo``: wall, open, start, goal, path) from the Hub dataset ``--source-repo`` through
huggingface_hub's cache, or from ``--source DIR``. The answer is the question with one shortest
path from S to G drawn as ``o``. Characters are stored as their charset position + 1 (PAD = 0).

``--aug`` (off by default, as in both reference builders) turns each train maze into a group of 8
one-example puzzles, the dihedral transforms 0..7 in order (0 = unchanged); the test split is never
augmented and keeps the CSV order. The TRM README's comment on this command says "8 augments"
while the command it shows leaves ``--aug`` off; the default here is what that command builds.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script (python dataset/build_maze_dataset.py), as the TRM README does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataset.arc_grid import NUM_DIHEDRAL, dihedral_transform
from dataset.build_arc_augment import stable_rng
from dataset.build_arc_writer import pwrite_all
from dataset.build_sudoku_dataset import add_common_args
from dataset.puzzle_csv import PuzzleCsvError, create_split, csv_path, decode, read_puzzle_csv, select_rows, \
    write_identifiers
from utils.errors import run_command
from utils.io import atomic_directory

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = (CHARSET.index(c) + 1 for c in CHARSET)  # token ids 1..5
VOCAB_SIZE = len(CHARSET) + 1
GROUPS_PER_BLOCK = 512


def load_split(split: str, source_repo: str, source_dir: str | None, side: int | None):
    """(questions, answers) as token ids [n, side*side] uint8, checked; the grid side; the raw table."""
    path = csv_path(split, source_repo, source_dir)
    table = read_puzzle_csv(path, None if side is None else side * side, square=True)
    ids = list(range(1, len(CHARSET) + 1))
    q, a = (decode(codes, CHARSET, ids, path, column) for codes, column in ((table.questions, "question"),
                                                                            (table.answers, "answer")))
    clash = (q != a) & ~((q == OPEN) & (a == PATH))
    if clash.any():
        row, cell = np.argwhere(clash)[0]
        n = int(np.sqrt(q.shape[1]))
        raise PuzzleCsvError(f"{path}: row {row + 1}: answer has {CHARSET[a[row, cell] - 1]!r} at row {cell // n + 1}, "
                             f"column {cell % n + 1} where the question has {CHARSET[q[row, cell] - 1]!r} "
                             "(an answer may only turn open cells into path)")
    return q, a, int(np.sqrt(q.shape[1])), table


@dataclass
class MazeBuildConfig:
    output_dir: str = "data/maze-30x30-hard-1k"
    source_repo: str = "sapientinc/maze-30x30-hard-1k"
    source: str | None = None
    subsample_size: int | None = None
    aug: bool = False
    seed: int = 42
    progress: bool = True


def build_maze_dataset(cfg: MazeBuildConfig) -> dict:
    started = time.perf_counter()
    if cfg.subsample_size is not None and cfg.subsample_size < 0:
        raise PuzzleCsvError("--subsample-size must be >= 0")
    data, stats, side = {}, {}, None
    for split in ("train", "test"):
        q, a, side, table = load_split(split, cfg.source_repo, cfg.source, side)  # test must match train's size
        rows = select_rows(table, None, cfg.subsample_size if split == "train" else None,
                           stable_rng(cfg.seed, "subsample", split))
        data[split] = (q[rows], a[rows])
        stats[split] = {"groups": len(rows), "copies": NUM_DIHEDRAL - 1 if split == "train" and cfg.aug else 0}
    with atomic_directory(cfg.output_dir) as out:
        for split, s in stats.items():
            group = 1 + s["copies"]
            s["examples"] = s["groups"] * group
            targets = create_split(out / split, s["groups"], group, side * side, VOCAB_SIZE)
            starts = range(0, s["groups"], GROUPS_PER_BLOCK)
            for start in tqdm(starts, desc=f"writing {split}", disable=not cfg.progress, leave=False):
                stop = min(start + GROUPS_PER_BLOCK, s["groups"])
                for (path, offset), grids in zip((targets["inputs"], targets["labels"]), data[split]):
                    grids = grids[start:stop].reshape(-1, side, side)
                    # [groups, transforms, side*side]: each group's copies are adjacent rows
                    rows = np.stack([dihedral_transform(grids, t) for t in range(group)], axis=1)
                    with open(path, "r+b") as f:
                        pwrite_all(f.fileno(), rows.reshape(-1, side * side), offset + start * group * side * side)
        write_identifiers(out)
    return {"splits": stats, "seconds": time.perf_counter() - started, "output_dir": cfg.output_dir, "side": side}


def format_summary(summary: dict) -> str:
    lines = [f"Built {summary['output_dir']} in {summary['seconds']:.1f} s ({summary['side']}x{summary['side']} grids)"]
    for split, s in summary["splits"].items():
        lines.append(f"  {split:5s}: {s['groups']:>7,} mazes x {1 + s['copies']} = {s['examples']:>9,} examples")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> MazeBuildConfig:
    p = argparse.ArgumentParser(prog="python -m dataset.build_maze_dataset", description=__doc__.split("\n\n")[0])
    add_common_args(p, MazeBuildConfig.source_repo, MazeBuildConfig.output_dir)
    p.add_argument("--aug", action=argparse.BooleanOptionalAction, default=False,
                   help="the 8 dihedral transforms of each train maze (default off, as the reference)")
    return MazeBuildConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    return run_command(lambda: print(format_summary(build_maze_dataset(cfg))))  # bad input: one line, exit code 2


if __name__ == "__main__":
    sys.exit(main())
