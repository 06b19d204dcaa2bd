"""CPU learning curve of a tiny TRM-MLP on generated Sudokus; prints one table.

    python benchmarks/bench_sudoku_learning_curve.py                  # 3000 train, 300 test, 5 minutes
    python benchmarks/bench_sudoku_learning_curve.py --minutes 2 --train 1000
    python benchmarks/bench_sudoku_learning_curve.py --device cuda --full --num-aug 100 --test 20000 --batch 768

Generates Sudokus in the Hub's CSV format (symmetries of one solved pattern, about half the cells
blanked), builds them with dataset.build_sudoku_dataset (no copies), trains the TRM-MLP of
config/cfg_sudoku_mlp.yaml shrunk to CPU size for a wall-clock budget, evaluating on the test
split every few epochs: blank-cell accuracy and exact accuracy against training minutes
(evaluation time excluded); ``--full`` trains the real 5M TRM-MLP instead (for a GPU). At the end
the last weights are evaluated again with arch.adaptive_halting=True: accuracy and evaluation time
next to the full halt_max_steps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_build_sudoku import write_csvs  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from dataset import build_sudoku_dataset  # noqa: E402
from training.config import register_configs, to_pretrain_config  # noqa: E402
from training.trainer import Trainer  # noqa: E402

TINY = ["arch.hidden_size=64", "arch.num_heads=2", "arch.L_layers=2", "arch.H_cycles=2", "arch.L_cycles=2",
        "arch.puzzle_emb_ndim=64", "arch.puzzle_emb_len=1", "arch.halt_max_steps=4", "arch.forward_dtype=float32"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=4, help="epochs between evaluations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="the real TRM-MLP (hidden 512) instead of the tiny one")
    p.add_argument("--num-aug", type=int, default=0)
    p.add_argument("--eval-batch", type=int, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="sudoku_curve_"))
    write_csvs(work / "csv", args.train, args.test, seed=1)
    data = work / "data"
    assert build_sudoku_dataset.main(["--source", str(work / "csv"), "--output-dir", str(data), "--no-progress",
                                      "--num-aug", str(args.num_aug)]) == 0
    gpu = args.device.startswith("cuda")
    register_configs()
    epochs = args.eval_every * 1000
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base="1.3"):
        cfg = to_pretrain_config(compose(config_name="cfg_sudoku_mlp", overrides=[
            *([] if args.full else TINY), f"data_paths=[{data}]", f"checkpoint_path={work / 'run'}", f"global_batch_size={args.batch}",
            f"epochs={epochs}", f"eval_interval={args.eval_every}", "lr=1e-3", "puzzle_emb_lr=1e-3",
            "weight_decay=0.1", "puzzle_emb_weight_decay=0.1", "lr_warmup_steps=100", "ema=False",
            f"max_train_minutes={args.minutes}", "final_eval_reserve_minutes=0", "checkpoint_every_eval=false",
            f"device={args.device}", "compile=false", f"autocast={gpu}", "wandb_mode=disabled", "log_interval=0",
            *([f"eval_global_batch_size={args.eval_batch}"] if args.eval_batch else [])]))
    trainer = Trainer(cfg)
    started = time.time()
    try:
        trainer.train()
        records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in records if "Sudoku/exact_accuracy" in r]
        print(f"\n{args.train} train (x{1 + args.num_aug}) / {args.test} test Sudokus, TRM-MLP hidden "
              f"{cfg.arch.hidden_size}, batch {args.batch}, {args.device}, {args.threads} thread(s)\n")
        print("| train minutes | step | blank-cell accuracy | exact accuracy | valid grids |\n|---|---|---|---|---|")
        eval_seconds = 0.0
        for r in evals:
            eval_seconds += r.get("eval/seconds", 0.0)
            minutes = (r["time"] - started - eval_seconds) / 60
            print(f"| {minutes:.1f} | {r['step']} | {r['Sudoku/blank_cell_accuracy']:.3f} | "
                  f"{r['Sudoku/exact_accuracy']:.3f} | {r['Sudoku/valid']:.3f} |")
        arch = trainer.head.model.arch
        print("\n| evaluation | exact accuracy | blank-cell accuracy | seconds | puzzles/s |\n|---|---|---|---|---|")
        for adaptive in (False, True):
            arch.adaptive_halting = adaptive
            if gpu:
                torch.cuda.synchronize()
            t0 = time.time()
            m = trainer.evaluate()
            seconds = time.time() - t0
            name = "adaptive halting" if adaptive else f"all {arch.halt_max_steps} ACT steps"
            print(f"| {name} | {m['Sudoku/exact_accuracy']:.3f} | {m['Sudoku/blank_cell_accuracy']:.3f} | "
                  f"{seconds:.2f} | {args.test / seconds:,.0f} |")
    finally:
        trainer.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
