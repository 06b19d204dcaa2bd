"""Peak CUDA memory of one optimizer step of each GPU preset (config/preset/*.yaml), no dataset needed.

One optimizer step as the trainer runs it: gradient_accumulation_steps micro-batches of
global_batch_size / K random-token rows (900 tokens, vocab 12), each with its own fresh ACT carry,
forward + backward through the ACT loss head, then AdamATan2 on the weights and sign-SGD on the puzzle
table (ARC-1 + concept size by default: 876,406 rows, 1.8 GB in fp32, held on the GPU like in training).
Eager mode (torch.compile usually needs less). Prints one line per (preset, arch), and with
``--micro-batches`` the peak for other micro-batch sizes too, to pick a preset's K.

    python benchmarks/bench_preset_memory.py                       # both presets, TRM and HRM ARC configs
    python benchmarks/bench_preset_memory.py --micro-batches 32,64,96,128

Without CUDA it prints "no CUDA" and exits 0. About a minute on one H200.

Measured 2026-12-04 on one H200 (torch 2.11, eager, bf16, 876,406-row table), one micro-batch of m rows
(an accumulated step adds the other K-1 slots' ACT carries: z_H and z_L of 768 rows x 916 x 512 in
bf16 = 1.34 GiB for all K together; gradients are allocated once, by the first micro-batch), GiB:
    m        32     48     64     96    128    192
    TRM L6  11.59  16.44  21.31  31.04  40.81  60.21   (arch=trm: H_cycles 3, L_cycles 6)
    TRM L4   8.89  12.38  15.90  22.94  30.00  44.04   (arch.L_cycles=4, the TRM README's ARC run)
    HRM      7.89  10.90  13.90  19.92  25.94  37.92
(an equivalent inline script on the main branch's code; this file itself was written afterwards and has
not run on a GPU yet). The former presets (batch 128 on 24 GB, 64 on 16 GB) needed 40.8 / 21.3 GiB
for TRM: they did not fit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hydra import compose, initialize_config_dir  # noqa: E402

from models.registry import build_model  # noqa: E402
from models.sparse_embedding import SparseSignSGD  # noqa: E402
from training.config import register_configs, to_pretrain_config  # noqa: E402
from training.optimizers import build_dense_optimizer  # noqa: E402

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "config")
SEQ_LEN, VOCAB = 900, 12


def preset_config(preset: str, arch: str):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return to_pretrain_config(compose(config_name="cfg_pretrain", overrides=[f"preset={preset}", f"arch={arch}"]))


def peak_of_one_step(cfg, micro_batch: int, steps: int, num_ids: int, device: torch.device) -> float:
    """GiB allocated at peak during one optimizer step of ``steps`` micro-batches of ``micro_batch`` rows."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    head = build_model(cfg.arch, batch_size=micro_batch, seq_len=SEQ_LEN, vocab_size=VOCAB,
                       num_puzzle_identifiers=num_ids).to(device).train()
    dense = build_dense_optimizer(cfg.optimizer, list(head.parameters()), betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    sparse = SparseSignSGD(head.model.puzzle_emb.buffers(), lr=cfg.puzzle_emb_lr) if head.model.puzzle_emb else None
    for g in dense.param_groups:
        g["lr"] = cfg.lr
    gen = torch.Generator().manual_seed(0)
    for i in range(steps):
        batch = {"inputs": torch.randint(0, VOCAB, (micro_batch, SEQ_LEN), generator=gen, dtype=torch.int32),
                 "labels": torch.randint(2, VOCAB, (micro_batch, SEQ_LEN), generator=gen, dtype=torch.int32),
                 "puzzle_identifiers": torch.randint(1, num_ids, (micro_batch,), generator=gen, dtype=torch.int32)}
        batch = {k: v.to(device) for k, v in batch.items()}
        carry = head.initial_carry(batch)
        _, loss, _, _, _ = head(carry=carry, batch=batch, return_keys=())
        (loss / (micro_batch * steps)).backward()
        if sparse is not None and i < steps - 1:
            sparse.stash_local_gradients()
    dense.step()
    if sparse is not None:
        sparse.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    del head, dense, sparse
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="gpu_24gb,gpu_16gb")
    parser.add_argument("--archs", default="trm,hrm")
    parser.add_argument("--num-puzzle-ids", type=int, default=876_406, help="puzzle table rows (ARC-1 + concept)")
    parser.add_argument("--micro-batches", default="", help="also measure these micro-batch sizes (one micro-batch)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA")
        return 0
    device = torch.device("cuda")
    torch.set_float32_matmul_precision("high")
    print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, eager, bf16, "
          f"puzzle table {args.num_puzzle_ids} rows")
    for arch in args.archs.split(","):
        for preset in args.presets.split(","):
            cfg = preset_config(preset, arch)
            k = cfg.gradient_accumulation_steps
            micro = cfg.global_batch_size // k
            started = time.time()
            peak = peak_of_one_step(cfg, micro, k, args.num_puzzle_ids, device)
            print(f"{preset:9s} {arch}: global {cfg.global_batch_size} = {k} x {micro}: peak {peak:.2f} GiB "
                  f"({time.time() - started:.1f} s)", flush=True)
        for micro in [int(x) for x in args.micro_batches.split(",") if x]:
            peak = peak_of_one_step(preset_config("gpu_24gb", arch), micro, 1, args.num_puzzle_ids, device)
            print(f"micro-batch {micro:4d} {arch}: peak {peak:.2f} GiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
