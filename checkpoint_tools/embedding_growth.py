"""Fit a checkpoint's puzzle-embedding table to another dataset's identifiers.json.

Rows are matched by identifier name (training/puzzle_rows.py): names found in the checkpoint keep
their trained row, new names get a fresh row by ``--strategy`` (mean | normal | zeros), rows of
names absent from the new dataset are dropped.

    python -m checkpoint_tools.embedding_growth <checkpoint> <new dataset dir or identifiers.json> <out folder> \
        [--strategy mean|normal|zeros] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from training.puzzle_rows import STATS_FILE, STRATEGIES, GrowthReport, align_state_dict, read_identifiers, read_table_stats


def grow_checkpoint(checkpoint: str | Path, new_identifiers: list[str], out_folder: str | Path,
                    strategy: str = "mean", seed: int = 0) -> GrowthReport | None:
    """Write a checkpoint folder whose tables fit ``new_identifiers``.

    Weights, EMA weights and config are carried over; train_state.* is not (its optimizer and
    loader state describe the old table and dataset), so training starts fresh from these weights.
    """
    from utils.io import atomic_directory, atomic_write_json
    from utils.tensor_files import read_safetensors, write_safetensors

    checkpoint = Path(checkpoint)
    old_identifiers = read_identifiers(checkpoint)
    stats = read_table_stats(checkpoint)
    report = None
    with atomic_directory(out_folder) as tmp:
        for weights_file in ("model.safetensors", "ema.safetensors"):
            if not (checkpoint / weights_file).is_file():
                continue
            state, report = align_state_dict(read_safetensors(checkpoint / weights_file), old_identifiers,
                                             new_identifiers, strategy, seed, stats)
            write_safetensors(tmp / weights_file, state)
        for extra in ("config.yaml", "README.md", STATS_FILE):
            if (checkpoint / extra).is_file():
                shutil.copy2(checkpoint / extra, tmp / extra)
        atomic_write_json(tmp / "identifiers.json", list(new_identifiers))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fit a checkpoint's puzzle-embedding table to new identifiers")
    parser.add_argument("checkpoint", help="checkpoint folder, run folder or Hub id")
    parser.add_argument("identifiers", help="new dataset folder, or its identifiers.json")
    parser.add_argument("out", help="output checkpoint folder")
    parser.add_argument("--strategy", choices=STRATEGIES, default="mean")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from training.hub import resolve_checkpoint

    folder = resolve_checkpoint(args.checkpoint)
    report = grow_checkpoint(folder, read_identifiers(args.identifiers), args.out, args.strategy, args.seed)
    print(f"{args.out}: {report or 'model has no puzzle-embedding table; weights copied'}")
    return 0


if __name__ == "__main__":
    from utils.errors import exit_on_user_error

    with exit_on_user_error():  # a checkpoint that does not resolve: one line, exit 2
        sys.exit(main())
