"""Inference-size export of a checkpoint folder.

A training checkpoint carries fp32 weights, the optimizer state and one puzzle-embedding row per
training identifier (about a million rows x 512 for ARC with 1000 augmentations: 2 GB for a 7M
parameter model). For inference only the puzzles to be solved need rows, and bf16 suffices:

- weights cast to bf16 (fixed fp32 buffers such as RoPE tables stay fp32);
- LoRA adapters, if any, merged into the dense weights;
- the table keeps only the blank row plus the rows of the kept puzzles (by identifier name, or by
  task id: all augmented copies of the task), or only the blank row with ``--keep none``;
- identifiers.json filtered the same way (same order), so row i still belongs to identifier i;
- config.yaml copied, no train_state.*; puzzle_emb_stats.safetensors holds the mean and std of
  the full trained table, so rows for new puzzles start from them (training.puzzle_rows).

Load an export onto a dataset with ``python -m checkpoint_tools.embedding_growth`` (rows matched by name;
training and evaluation do the same when they load it).

    python -m checkpoint_tools.export checkpoints/run/step_00100000 exports/trm-arc1 --keep 00576224 --keep 009d5c81
    python -m checkpoint_tools.export <checkpoint or org/repo> <out> --keep-file task_ids.txt
    python -m checkpoint_tools.export <checkpoint> <out> --keep none      # dense weights only
    python -m checkpoint_tools.export <checkpoint> <out> --max-copies 9   # every task, its first 9 copies
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
from pathlib import Path

import torch

from dataset.arc_grid import ID_SEPARATOR
from models.lora import merge_lora_state_dict
from training.puzzle_rows import STATS_FILE, find_table_key, table_stats

KEEP_FP32_PATTERNS = ("*rotary*", "*cos_cached", "*sin_cached", "*inv_freq")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def folder_size(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def select_rows(identifiers: list[str], keep: list[str] | None, max_copies: int | None = None) -> list[int]:
    """Rows to keep: 0 (blank) plus every identifier named in ``keep`` or whose task id is in it.

    ``keep`` None keeps everything; an empty list (``--keep none``) keeps the blank row only.
    ``max_copies`` keeps only the first K identifiers of each task (evaluation with
    eval_max_augmentations=K reads only those).
    """
    if keep is None and max_copies is None:
        return list(range(len(identifiers)))
    wanted = set(keep) if keep is not None else None
    per_task: dict[str, int] = {}
    matched: set[str] = set()
    rows = [0]
    for i, name in enumerate(identifiers[1:], start=1):
        task = name.split(ID_SEPARATOR)[0]
        if wanted is not None:
            if name not in wanted and task not in wanted:
                continue
            matched.update((name, task))
        per_task[task] = per_task.get(task, 0) + 1
        if max_copies is None or per_task[task] <= max_copies:
            rows.append(i)
    if wanted is None:
        return rows
    missing = wanted - matched
    if missing:
        raise ValueError(f"{len(missing)} kept names match no identifier, e.g. {sorted(missing)[:5]}")
    return rows


def export_state_dict(state: dict[str, torch.Tensor], rows: list[int] | None,
                      dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    state = merge_lora_state_dict(state)
    out = {}
    table_key = find_table_key(state)
    for key, tensor in state.items():
        if key == table_key and rows is not None:
            tensor = tensor[torch.tensor(rows, dtype=torch.long)]
        if tensor.is_floating_point() and not any(fnmatch.fnmatchcase(key, p) for p in KEEP_FP32_PATTERNS):
            tensor = tensor.to(dtype)
        out[key] = tensor.contiguous()
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path, keep: list[str] | None = None,
                      dtype: str = "bfloat16", use_ema: bool = True, max_copies: int | None = None) -> dict:
    """Write the export; return a summary with both folder sizes in bytes."""
    from utils.io import atomic_directory, atomic_write_json
    from utils.tensor_files import read_safetensors, write_safetensors

    checkpoint = Path(checkpoint)
    weights = checkpoint / "ema.safetensors"
    if not (use_ema and weights.is_file()):
        weights = checkpoint / "model.safetensors"
    state = read_safetensors(weights)
    identifiers = json.loads((checkpoint / "identifiers.json").read_text())
    if find_table_key(state) is None:
        rows, rows_kept = None, identifiers  # a model without puzzle embeddings: nothing to filter
    else:
        rows = select_rows(identifiers, keep, max_copies)
        rows_kept = [identifiers[i] for i in rows]
    exported = export_state_dict(state, rows, DTYPES[dtype])
    with atomic_directory(out) as tmp:
        write_safetensors(tmp / "model.safetensors", exported, metadata={"format": "pt", "export_dtype": dtype})
        table_key = find_table_key(state)
        if table_key is not None:  # new puzzles can still start from the trained rows' mean / spread
            write_safetensors(tmp / STATS_FILE, table_stats(state[table_key]))
        atomic_write_json(tmp / "identifiers.json", rows_kept)
        for extra in ("config.yaml", "metrics.json", "README.md"):
            if (checkpoint / extra).is_file():
                shutil.copy2(checkpoint / extra, tmp / extra)
        summary = {
            "source": str(checkpoint), "weights": weights.name, "dtype": dtype,
            "identifiers_kept": len(rows_kept), "identifiers_total": len(identifiers),
            "source_bytes": folder_size(checkpoint),
        }
        atomic_write_json(tmp / "export_info.json", summary, indent=2)
    summary["export_bytes"] = folder_size(out)
    return summary


def _read_keep(args: argparse.Namespace) -> list[str] | None:
    names: list[str] = []
    for item in args.keep:
        if item.lower() == "none":
            return []
        names.append(item)
    for path in args.keep_file:
        text = Path(path).read_text()
        names += json.loads(text) if path.endswith(".json") else text.split()
    return names or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Inference-size export of a checkpoint")
    parser.add_argument("checkpoint", help="checkpoint folder, run folder or Hub id")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--keep", action="append", default=[],
                        help="identifier name or task id whose rows to keep (repeatable); 'none' keeps no rows")
    parser.add_argument("--keep-file", action="append", default=[], help="file of names (whitespace or JSON list)")
    parser.add_argument("--max-copies", type=int, default=None,
                        help="keep only the first K identifiers (original + augmented copies) of each task")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--no-ema", action="store_true", help="export model.safetensors even when EMA weights exist")
    args = parser.parse_args(argv)

    from training.hub import resolve_checkpoint
    from utils.errors import exit_on_user_error

    with exit_on_user_error():  # a damaged or refused file: one line naming it, exit code 2
        summary = export_checkpoint(resolve_checkpoint(args.checkpoint), args.out, _read_keep(args), args.dtype,
                                    use_ema=not args.no_ema, max_copies=args.max_copies)
    mib = 1024 * 1024
    print(f"{args.out}: {summary['identifiers_kept']}/{summary['identifiers_total']} identifiers, "
          f"{summary['source_bytes'] / mib:.1f} MiB -> {summary['export_bytes'] / mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
