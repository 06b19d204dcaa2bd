"""Training throughput of the Trainer: one table.

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py            # CPU rows (the tiny config)
    python benchmarks/bench_train.py --full                       # + the full ARC TRM on CUDA

CPU rows use the configuration of the reference measurement in shared/REFERENCE_NOTES.md (TRM,
hidden 64, 4 heads, 916 positions, batch 8, H_cycles 2, L_cycles 3, 2 layers, float32), so the
numbers compare with the reference's 8.9 samples/s (2 threads). A training step is one ACT step
(forward + backward + optimizers + logging); "eval batch" is 16 ACT steps on one batch. On CUDA the
full ARC TRM (hidden 512, H3 L4, bf16, torch.compile) adds MFU (model FLOPs over bf16 dense peak)
and peak memory. Data: a synthetic dataset in the on-disk format, in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dataset_fixtures import write_tiny_dataset  # noqa: E402
from training.config import PretrainConfig  # noqa: E402
from training.trainer import Trainer  # noqa: E402

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "4090": 165e12}


def cpu_config(data: str, run: str, batch: int) -> PretrainConfig:
    cfg = PretrainConfig(data_paths=[data], checkpoint_path=run, global_batch_size=batch, epochs=1000,
                         eval_interval=None, evaluators=[], device="cpu", compile=False, autocast=False,
                         wandb_mode="disabled", log_interval=0, resume=False)
    a = cfg.arch
    a.hidden_size, a.num_heads, a.H_cycles, a.L_cycles, a.L_layers = 64, 4, 2, 3, 2
    a.puzzle_emb_ndim, a.puzzle_emb_len, a.halt_max_steps = 64, 16, 16
    return cfg


def full_config(data: str, run: str, batch: int) -> PretrainConfig:
    cfg = PretrainConfig(data_paths=[data], checkpoint_path=run, global_batch_size=batch, epochs=100000,
                         eval_interval=None, evaluators=[], device="cuda", wandb_mode="disabled", log_interval=0,
                         resume=False)
    cfg.arch.L_cycles = 4  # the README's ARC setting
    return cfg


def train_flops_per_example(cfg: PretrainConfig, seq: int) -> float:
    """Matmul FLOPs of one ACT training step per example: H_cycles x (L_cycles + 1) applications of
    the shared net, the last cycle's (L_cycles + 1) also backward (2x); plus the output head."""
    a = cfg.arch
    inner = -(-int(a.expansion * a.hidden_size * 2 / 3) // 256) * 256
    block_params = 4 * a.hidden_size ** 2 + 3 * a.hidden_size * inner
    block = 2 * block_params * seq + 4 * seq * seq * a.hidden_size  # projections + attention scores/values
    net = a.L_layers * block
    forward = a.H_cycles * (a.L_cycles + 1) * net
    backward = 2 * (a.L_cycles + 1) * net
    return forward + backward + 3 * 2 * seq * a.hidden_size * 12


def measure(cfg: PretrainConfig, steps: int, warmup: int) -> dict:
    trainer = Trainer(cfg)
    device = trainer.device
    batches = iter(trainer.train_loader)
    for _ in range(warmup):
        _, batch, gbs = next(batches)
        trainer.train_step(batch, gbs)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        _, batch, gbs = next(batches)
        trainer.train_step(batch, gbs)  # logging syncs every step, as in a real run
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - started) / steps

    head = trainer.head.eval()
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.inference_mode():
        carry = head.initial_carry(batch)
        started = time.perf_counter()
        for _ in range(cfg.arch.halt_max_steps):
            carry, *_ = trainer.eval_model(carry=carry, batch=batch, return_keys=["preds"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        eval_s = time.perf_counter() - started
    row = {"step_s": step_s, "samples_s": cfg.global_batch_size / step_s, "eval_s": eval_s,
           "mem": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
           "mfu": float("nan")}
    if device.type == "cuda":
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in torch.cuda.get_device_name()), None)
        if peak:
            seq = 900 + cfg.arch.prefix_len
            row["mfu"] = train_flops_per_example(cfg, seq) * row["samples_s"] / peak
    trainer.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="also the full ARC TRM (CUDA only)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--full-batch", type=int, default=192)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "data")
        write_tiny_dataset(data, num_tasks=16, augs_per_task=3, examples_per_puzzle=4)
        for threads in sorted({1, torch.get_num_threads()}):
            torch.set_num_threads(threads)
            r = measure(cpu_config(data, f"{tmp}/cpu{threads}", 8), args.steps, warmup=1)
            rows.append(("TRM tiny (h64 H2 L3, fp32)", f"cpu x{threads} threads", 8, r))
        if args.full and torch.cuda.is_available():
            r = measure(full_config(data, f"{tmp}/full", args.full_batch), args.steps * 4, warmup=3)
            rows.append(("TRM ARC (h512 H3 L4, bf16, compile)", torch.cuda.get_device_name(), args.full_batch, r))
    print("| config | device | batch | train step (s) | samples/s | eval batch, 16 ACT steps (s) | peak mem (GiB) | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for name, device, batch, r in rows:
        mem = "n/a" if r["mem"] != r["mem"] else f"{r['mem']:.2f}"
        mfu = "n/a" if r["mfu"] != r["mfu"] else f"{r['mfu']:.1%}"
        print(f"| {name} | {device} | {batch} | {r['step_s']:.3f} | {r['samples_s']:.1f} | {r['eval_s']:.2f} | {mem} | {mfu} |")


if __name__ == "__main__":
    main()
