"""Training-step (forward + backward of one ACT step) and evaluation speed of TRM.

CPU (default without CUDA): the configuration the reference was measured with on a 2-core machine
(TRM hidden 64, 4 heads, 900 tokens + 16 prefix, batch 8, H_cycles 2, L_cycles 3, L_layers 2,
float32) at 1 and 2 threads; reference: 1.85 s / 0.90 s per training step, 12.1 s / 6.2 s per
16-step evaluation. CUDA: the full ARC configuration (hidden 512, bf16) with MFU and peak memory.

    python benchmarks/bench_model_step.py                    # CPU table
    python benchmarks/bench_model_step.py --repeats 5 --no-eval
    python benchmarks/bench_model_step.py --device cuda --batch-size 192 [--compile]

Prints one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.config import ArchConfig  # noqa: E402
from models.layers import swiglu_inner_size  # noqa: E402
from models.registry import build_model, count_parameters  # noqa: E402

SEQ_LEN, VOCAB, NUM_IDS = 900, 12, 1000
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40": 181.0, "4090": 165.0}


def cpu_arch() -> ArchConfig:
    return ArchConfig(hidden_size=64, num_heads=4, H_cycles=2, L_cycles=3, L_layers=2, puzzle_emb_ndim=64,
                      puzzle_emb_len=16, forward_dtype="float32", halt_max_steps=16)


def train_step_flops(arch: ArchConfig, batch: int, seq: int) -> float:
    """Matmul FLOPs of one training ACT step: no-grad cycles forward only, the last cycle x3."""
    h, inner = arch.hidden_size, swiglu_inner_size(arch.hidden_size, arch.expansion)
    tokens = batch * seq
    block = 2 * tokens * (3 * h * h + h * h + 3 * h * inner) + 4 * batch * seq * seq * h
    net = arch.L_layers * block
    per_cycle = (arch.L_cycles + 1) * net
    heads = 2 * tokens * h * VOCAB
    return (arch.H_cycles - 1) * per_cycle + 3 * (per_cycle + heads)


def make_batch(batch: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    data = {"inputs": torch.randint(0, VOCAB, (batch, SEQ_LEN), generator=g, dtype=torch.int32),
            "labels": torch.randint(0, VOCAB, (batch, SEQ_LEN), generator=g).to(torch.int32),
            "puzzle_identifiers": torch.randint(1, NUM_IDS, (batch,), generator=g, dtype=torch.int32)}
    return {k: v.to(device) for k, v in data.items()}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(arch: ArchConfig, batch_size: int, device: torch.device, repeats: int, run_eval: bool, compile_: bool):
    torch.manual_seed(0)
    head = build_model(arch, batch_size=batch_size, seq_len=SEQ_LEN, vocab_size=VOCAB,
                       num_puzzle_identifiers=NUM_IDS).to(device)
    step_fn = torch.compile(head) if compile_ else head
    batch = make_batch(batch_size, device)
    head.train()
    fwd, bwd = [], []
    for i in range(repeats + 1):  # the first call warms up (allocations, compilation)
        carry = head.initial_carry(batch)
        sync(device)
        t0 = time.perf_counter()
        _, loss, _, _, _ = step_fn(carry, batch)
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        t2 = time.perf_counter()
        head.zero_grad(set_to_none=True)
        if i:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    total = [a + b for a, b in zip(fwd, bwd)]
    eval_s = float("nan")
    if run_eval:
        head.eval()
        with torch.no_grad():
            carry = head.initial_carry(batch)
            sync(device)
            t0 = time.perf_counter()
            while True:
                carry, _, _, _, finished = step_fn(carry, batch)
                if finished:
                    break
            sync(device)
            eval_s = time.perf_counter() - t0
    return dict(params=count_parameters(head), fwd=statistics.median(fwd), bwd=statistics.median(bwd),
                step=statistics.median(total), eval=eval_s)


def peak_tflops(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts to measure")
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 on CPU, 192 on CUDA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-eval", action="store_true", help="skip the 16-step evaluation timing")
    parser.add_argument("--compile", action="store_true", help="torch.compile the loss head (CUDA)")
    parser.add_argument("--L-cycles", type=int, default=None, help="override L_cycles (the ARC README trains with 4)")
    args = parser.parse_args()
    device = torch.device(args.device)

    rows = []
    if device.type == "cpu":
        arch = cpu_arch() if args.L_cycles is None else dataclasses.replace(cpu_arch(), L_cycles=args.L_cycles)
        batch = args.batch_size or 8
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            r = measure(arch, batch, device, args.repeats, not args.no_eval, args.compile)
            rows.append((f"cpu x{threads} fp32", arch, batch, r, None, None))
    else:
        arch = ArchConfig() if args.L_cycles is None else ArchConfig(L_cycles=args.L_cycles)  # full ARC TRM, bf16
        batch = args.batch_size or 192
        torch.cuda.reset_peak_memory_stats(device)
        r = measure(arch, batch, device, args.repeats, not args.no_eval, args.compile)
        peak = peak_tflops(device)
        achieved = train_step_flops(arch, batch, SEQ_LEN + arch.prefix_len) / r["step"] / 1e12
        mfu = f"{100 * achieved / peak:.1f}%" if peak else f"{achieved:.0f} TF/s"
        mem = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
        rows.append((f"{torch.cuda.get_device_name(device)} bf16", arch, batch, r, mfu, mem))

    header = ("setting", "hidden", "H x L cyc", "batch", "params", "fwd s", "bwd s", "step s", "samples/s",
              "eval s (16 steps)", "MFU", "peak mem")
    table = [header]
    for name, arch, batch, r, mfu, mem in rows:
        table.append((name, str(arch.hidden_size), f"{arch.H_cycles} x {arch.L_cycles}", str(batch), f"{r['params']:,}",
                      f"{r['fwd']:.3f}", f"{r['bwd']:.3f}", f"{r['step']:.3f}", f"{batch / r['step']:.1f}",
                      f"{r['eval']:.2f}" if r["eval"] == r["eval"] else "-", mfu or "-", mem or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for j, row in enumerate(table):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if j == 0:
            print("-+-".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
