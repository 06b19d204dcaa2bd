"""Entry point: ``python -m seal stage=<ttt|self_edit|evaluate|restem|loop> [overrides]``.

Examples (CPU-sized run on SEAL's 12 training tasks with a small model, then the full default)::

    python -m seal stage=ttt data=seal_training data.max_tasks=2 ttt.max_examples=16
    python -m seal stage=loop model=llama_3_2_1b stage.rounds=2 run_dir=runs/seal_loop
    python -m seal stage=evaluate stage.target=ttt

Hydra composes ``seal/configs/cfg_seal.yaml`` over the typed schema in ``seal/config.py``.
"""

from __future__ import annotations

import os

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from seal.config import SealConfig
from seal.stages import run_stage

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")  # apart from config/: pretrain.py --help lists only its own groups
ConfigStore.instance().store(name="seal_schema", node=SealConfig)


def to_dataclass(cfg: DictConfig) -> SealConfig:
    merged = OmegaConf.merge(OmegaConf.structured(SealConfig), cfg)
    return OmegaConf.to_object(merged)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="cfg_seal")
def main(cfg: DictConfig) -> None:
    config = to_dataclass(cfg)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    run_stage(config)


if __name__ == "__main__":
    main()
