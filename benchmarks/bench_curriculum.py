"""Depth curriculum (``arch_schedule``) vs none: wall time to a training-accuracy threshold, on CPU.

Task: memorise a tiny random ARC-format dataset (tests/dataset_fixtures.write_tiny_dataset: random
grids, 900 tokens) with a small TRM (hidden 32, 1 layer, H_cycles 2 x L_cycles 4, halt_max_steps 1 so
every step sees fresh examples). The curriculum runs H_cycles 1 x L_cycles 1 for the first
``--shallow-fraction`` of the steps, then the full depth. Time counts training steps only (no
evaluation, no checkpoint); the threshold is on the mean ``train/accuracy`` (token accuracy) of the last
``--window`` steps. Each configuration runs with several seeds; the table gives each run and the medians.

    OMP_NUM_THREADS=1 python benchmarks/bench_curriculum.py            # a few minutes on 2 cores
    python benchmarks/bench_curriculum.py --seeds 0 1 2 --threshold 0.9
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
from tests.dataset_fixtures import write_tiny_dataset  # noqa: E402
from training.config import PretrainConfig  # noqa: E402
from training.trainer import Trainer  # noqa: E402


def make_config(data: Path, run: Path, seed: int, epochs: int, schedule: list[dict]) -> PretrainConfig:
    cfg = PretrainConfig(data_paths=[str(data)], checkpoint_path=str(run), global_batch_size=4, epochs=epochs,
                         eval_interval=None, evaluators=[], lr=3e-3, lr_warmup_steps=5, seed=seed, device="cpu",
                         compile=False, autocast=False, wandb_mode="disabled", log_interval=0, loggers=["jsonl"],
                         checkpoint_every_eval=False, arch_schedule=schedule)
    arch = cfg.arch
    arch.hidden_size, arch.num_heads, arch.L_layers, arch.H_cycles, arch.L_cycles = 32, 2, 1, 2, 4
    arch.puzzle_emb_ndim, arch.puzzle_emb_len, arch.halt_max_steps = 32, 1, 1
    return cfg


def time_to_threshold(cfg: PretrainConfig, threshold: float, window: int) -> tuple[float | None, int, float]:
    """(training seconds until the windowed accuracy reached the threshold or None, steps, final accuracy)."""
    trainer = Trainer(cfg)
    trainer.evaluation = None
    accuracies: list[float] = []
    elapsed = [0.0]
    reached: list[float] = []
    step_fn = trainer.train_step

    def timed_step(batch, global_batch_size):
        started = time.perf_counter()
        out = step_fn(batch, global_batch_size)
        elapsed[0] += time.perf_counter() - started
        if out and "train/accuracy" in out:
            accuracies.append(out["train/accuracy"])
        if len(accuracies) >= window and statistics.mean(accuracies[-window:]) >= threshold and not reached:
            reached.append(elapsed[0])
            trainer.step_budget = trainer.step  # stop here
        return out

    trainer.train_step = timed_step
    trainer.train()
    trainer.close()
    final = statistics.mean(accuracies[-window:]) if accuracies else float("nan")
    return (reached[0] if reached else None), trainer.step, final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=150, help="upper bound on training length")
    parser.add_argument("--shallow-fraction", type=float, default=0.3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    schedules = {"none": [], "curriculum": [{"until_fraction": args.shallow_fraction, "H_cycles": 1, "L_cycles": 1}]}
    results: dict[str, list[float | None]] = {name: [] for name in schedules}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_tiny_dataset(data, num_tasks=4, augs_per_task=0, examples_per_puzzle=2, seed=0)
        print(f"| schedule | seed | seconds to mean train/accuracy >= {args.threshold} | steps | last accuracy |")
        print("| --- | --- | --- | --- | --- |")
        for seed in args.seeds:
            for name, schedule in schedules.items():
                cfg = make_config(data, Path(tmp) / f"{name}-{seed}", seed, args.epochs, schedule)
                seconds, steps, final = time_to_threshold(cfg, args.threshold, args.window)
                results[name].append(seconds)
                shown = f"{seconds:.1f}" if seconds is not None else "not reached"
                print(f"| {name} | {seed} | {shown} | {steps} | {final:.3f} |", flush=True)
    for name, values in results.items():
        done = [v for v in values if v is not None]
        median = f"{statistics.median(done):.1f} s" if done else "-"
        print(f"{name}: reached in {len(done)}/{len(values)} runs, median {median}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
