"""Checkpoint write and read time: the train state as safetensors + JSON against the pickled
``train_state.pt`` it replaces (torch.save / torch.load(weights_only=False)), for the ARC TRM.

The state is what the trainer saves: AdamATan2 moments for the 7M weights, RNG states, loader position
and (``--carry``) the ACT carry of a batch. The full checkpoint adds model.safetensors with a puzzle
table of ``--rows`` rows.

    python benchmarks/bench_checkpoint_io.py --rows 100000 --batch 96 --repeats 3

Prints one table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.config import ArchConfig  # noqa: E402
from models.registry import build_model  # noqa: E402
from training.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from training.optimizers import AdamATan2  # noqa: E402
from training.state import rng_state  # noqa: E402
from utils.nested_state import read_nested, write_nested  # noqa: E402


def build_state(rows: int, batch: int, carry: bool):
    arch = ArchConfig(hidden_size=512, num_heads=8, L_layers=2, H_cycles=3, L_cycles=6, puzzle_emb_ndim=512,
                      puzzle_emb_len=16, forward_dtype="float32")
    head = build_model(arch, batch_size=batch, seq_len=900, vocab_size=12, num_puzzle_identifiers=rows)
    params = [p for p in head.parameters()]
    opt = AdamATan2(params, lr=1e-4)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    per_rank = {"rng": rng_state(torch.device("cpu")), "loader": {"pass": 3, "batches_done": 17}, "carry": None}
    if carry:
        batch_data = {"inputs": torch.zeros(batch, 900, dtype=torch.int32), "labels": torch.zeros(batch, 900, dtype=torch.int32),
                      "puzzle_identifiers": torch.zeros(batch, dtype=torch.int32)}
        per_rank["carry"] = head.initial_carry(batch_data)
    state = {"step": 1000, "iteration": 2, "optimizers": [opt.state_dict()], "per_rank": [per_rank]}
    return head.state_dict(), state


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="puzzle-table rows")
    parser.add_argument("--batch", type=int, default=96, help="ACT carry rows (with --carry)")
    parser.add_argument("--carry", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_state, train_state = build_state(args.rows, args.batch, args.carry)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = [("train state, pickle (train_state.pt)",
                 lambda: torch.save(train_state, folder / "train_state.pt"),
                 lambda: torch.load(folder / "train_state.pt", weights_only=False)),
                ("train state, safetensors + JSON",
                 lambda: write_nested(folder, "train_state", train_state),
                 lambda: read_nested(folder, "train_state")),
                ("whole checkpoint folder (save_checkpoint / load_checkpoint)",
                 lambda: save_checkpoint(folder / "run", 1, model_state=model_state, train_state=train_state,
                                         config_yaml="x: 1\n"),
                 lambda: load_checkpoint(folder / "run" / "step_00000001"))]
        print(f"| what | write s | read s | MB |  (rows={args.rows}, carry batch={args.batch if args.carry else 0})")
        print("| --- | --- | --- | --- |")
        for name, write, read in rows:
            w = timed(write, args.repeats)
            r = timed(read, args.repeats)
            files = [p for p in folder.rglob("*") if p.is_file()]
            if "pickle" in name:
                size = (folder / "train_state.pt").stat().st_size
            elif "JSON" in name:
                size = sum(p.stat().st_size for p in files if p.parent == folder and p.stem == "train_state"
                           and p.suffix != ".pt")
            else:
                size = sum(p.stat().st_size for p in (folder / "run").rglob("*") if p.is_file())
            print(f"| {name} | {w:.2f} | {r:.2f} | {size / 2**20:.0f} |")


if __name__ == "__main__":
    main()
