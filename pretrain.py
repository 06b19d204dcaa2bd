"""Train a recursive reasoning model (TRM, HRM, transformer baseline) on a built ARC dataset.

One process (CPU, one GPU or Apple MPS):
    python pretrain.py arch=trm data_paths="[data/arc1concept-aug-1000]" arch.L_layers=2 \
        arch.H_cycles=3 arch.L_cycles=4 +run_name=my_run ema=True
Several GPUs on one machine (the reference command, unchanged):
    torchrun --nproc-per-node 4 --rdzv_backend=c10d --rdzv_endpoint=localhost:0 --nnodes=1 pretrain.py ...
Tiny CPU run (minutes, on the demo dataset built by `python demo.py`):
    python pretrain.py --config-name cfg_tiny_cpu

Every key and its type: training/config.py. The loop: training/trainer.py. Re-running a command with
the same run_name (or checkpoint_path) resumes from its newest complete checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from training.config import check_world_size, register_configs, to_pretrain_config
from utils.errors import exit_on_user_error

register_configs()


def train(cfg: DictConfig) -> dict:
    """Build the trainer from a composed config and run it; returns the last metrics (tests call this)."""
    config = to_pretrain_config(cfg)
    check_world_size(config, int(os.environ.get("WORLD_SIZE", 1)))  # before any process group or data
    from training.trainer import Trainer  # after the checks: torch takes seconds to import

    trainer = Trainer(config)
    try:
        return trainer.train()
    finally:
        trainer.close()


@hydra.main(config_path="config", config_name="cfg_pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():  # bad keys, values, files: one line and exit code 2
        train(cfg)


if __name__ == "__main__":
    from training.cli import precheck_command_line
    from training.config import PretrainConfig

    with exit_on_user_error():
        precheck_command_line(sys.argv[1:], Path(__file__).parent / "config", "cfg_pretrain", PretrainConfig)
    main()
