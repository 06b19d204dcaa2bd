"""Puzzle-embedding rows matched by identifier name, so a checkpoint's table fits another dataset.

Row i of the table belongs to identifier i. A dataset built from other tasks (or rebuilt with
other augmentations) numbers its identifiers differently, and the table no longer fits (the
"size mismatch for puzzle_emb" users hit). Here rows are matched by identifier NAME: names found
in the checkpoint keep their trained row, new names get a fresh row by ``strategy``:

- ``mean``: the mean of the checkpoint's trained rows (blank excluded): a typical embedding;
- ``normal``: a draw from a per-dimension normal fitted to the trained rows;
- ``zeros``: zero rows (how a fresh table starts).

Rows of names absent from the new dataset are dropped. The same mapping loads an inference-size
export (checkpoint_tools/export.py) onto any dataset; training and evaluation apply it when they
load weights, and ``python -m checkpoint_tools.embedding_growth`` writes a refitted checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

STRATEGIES = ("mean", "normal", "zeros")
TABLE_SUFFIX = "puzzle_emb.weights"
# Written by checkpoint_tools/export.py: the mean and std of the full trained table, so a checkpoint exported
# without (most of) its rows still initialises new rows from the trained distribution.
STATS_FILE = "puzzle_emb_stats.safetensors"


@dataclass
class GrowthReport:
    kept: int  # rows copied from the checkpoint (names present in both)
    added: int  # new rows initialised by the strategy
    dropped: int  # checkpoint rows whose names the new dataset lacks

    def __str__(self) -> str:
        return f"kept {self.kept} trained rows, added {self.added} new rows, dropped {self.dropped}"


def find_table_key(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The key of the puzzle-embedding table (``...puzzle_emb.weights``), or None without one."""
    keys = [k for k in state_dict if k.endswith(TABLE_SUFFIX)]
    if len(keys) > 1:
        raise ValueError(f"several puzzle-embedding tables in the state dict: {keys}")
    return keys[0] if keys else None


def grow_table(
    table: torch.Tensor,
    old_identifiers: list[str],
    new_identifiers: list[str],
    strategy: str = "mean",
    seed: int = 0,
    stats: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, GrowthReport]:
    """A table with one row per ``new_identifiers`` entry, trained rows reused by name.

    ``stats`` ({"mean", "std"} per dimension) replaces the statistics of the rows at hand.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    if table.shape[0] != len(old_identifiers):
        raise ValueError(f"table has {table.shape[0]} rows but there are {len(old_identifiers)} identifiers")
    old_index: dict[str, int] = {}
    for i, name in enumerate(old_identifiers):
        old_index.setdefault(name, i)

    new_rows = torch.tensor([old_index.get(name, -1) for name in new_identifiers], dtype=torch.long)
    known = new_rows >= 0
    trained = table[1:].float() if table.shape[0] > 1 else table.float()  # row 0 is the blank identifier

    grown = torch.empty(len(new_identifiers), table.shape[1], dtype=table.dtype)
    grown[known] = table[new_rows[known]]
    n_new = int((~known).sum())
    if n_new:
        if stats is not None:
            mean, std = stats["mean"].float(), stats["std"].float()
        else:
            mean = trained.mean(0) if trained.shape[0] else torch.zeros(table.shape[1])
            std = trained.std(0) if trained.shape[0] > 1 else torch.zeros(table.shape[1])
        if strategy == "zeros":
            fresh = torch.zeros(n_new, table.shape[1])
        elif strategy == "mean":
            fresh = mean.unsqueeze(0).expand(n_new, -1)
        else:
            gen = torch.Generator().manual_seed(seed)
            fresh = mean + torch.randn(n_new, table.shape[1], generator=gen) * std
        grown[~known] = fresh.to(table.dtype)
    kept = int(known.sum())
    dropped = len(set(old_identifiers) - set(new_identifiers))
    return grown, GrowthReport(kept=kept, added=n_new, dropped=dropped)


def align_state_dict(
    state_dict: dict[str, torch.Tensor],
    old_identifiers: list[str],
    new_identifiers: list[str],
    strategy: str = "mean",
    seed: int = 0,
    stats: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], GrowthReport | None]:
    """Return a copy of ``state_dict`` whose table fits ``new_identifiers`` (unchanged if it has none)."""
    key = find_table_key(state_dict)
    if key is None:
        return dict(state_dict), None
    if list(old_identifiers) == list(new_identifiers):
        return dict(state_dict), GrowthReport(kept=len(new_identifiers), added=0, dropped=0)
    table, report = grow_table(state_dict[key], old_identifiers, new_identifiers, strategy, seed, stats)
    out = dict(state_dict)
    out[key] = table
    return out, report


def read_table_stats(checkpoint: str | Path) -> dict[str, torch.Tensor] | None:
    """The trained table's statistics saved by an export, or None."""
    from utils.tensor_files import read_safetensors

    path = Path(checkpoint) / STATS_FILE
    return read_safetensors(path) if path.is_file() else None


def table_stats(table: torch.Tensor) -> dict[str, torch.Tensor]:
    trained = table[1:].float() if table.shape[0] > 1 else table.float()
    std = trained.std(0) if trained.shape[0] > 1 else torch.zeros(table.shape[1])
    return {"mean": trained.mean(0).contiguous(), "std": std.contiguous()}


def read_identifiers(path: str | Path) -> list[str]:
    """identifiers.json from a file, a dataset folder or a checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "identifiers.json"
    return json.loads(path.read_text())
