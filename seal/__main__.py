"""Entry point: ``python -m seal [preset=<name>] [stage=<ttt|self_edit|evaluate|restem|loop>] [overrides]``.

Examples::

    python -m seal preset=test                                   # tiny model + invented passages, CPU, < 1 min
    python -m seal preset=knowledge_incorporation_squad          # SEAL's SQuAD setting (Qwen2.5-7B)
    python -m seal preset=few_shot_learning_arc                  # SEAL's few-shot ARC setting
    python -m seal stage=ttt data=seal_training data.max_tasks=2 ttt.max_examples=16
    python -m seal stage=evaluate stage.target=ttt

Hydra composes ``seal/configs/cfg_seal.yaml`` over the typed schema in ``seal/config.py``. A user
error (a bad data file, a stage run before its input exists) prints one line and exits with 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from seal.config import SealConfig
from seal.loop import SealInputError
from seal.stages import run_stage

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")  # apart from config/: pretrain.py --help lists only its own groups
ConfigStore.instance().store(name="seal_schema", node=SealConfig)


def to_dataclass(cfg: DictConfig) -> SealConfig:
    merged = OmegaConf.merge(OmegaConf.structured(SealConfig), cfg)
    if merged.output_dir:  # before interpolations resolve, so ${run_dir} (model=tiny) follows it
        merged.run_dir = merged.output_dir
    return OmegaConf.to_object(merged)


def prepare_model(config: SealConfig) -> None:
    """``model.build_tiny``: write seal.tiny's taught model where the config expects one (preset=test)."""
    if config.model.build_tiny and not Path(config.model.name_or_path).exists():
        from seal.tiny import build_taught_model

        print(f"building a tiny {config.model.build_tiny} model at {config.model.name_or_path}")
        passages = config.knowledge.path if config.model.build_tiny == "knowledge" else None
        build_taught_model(config.model.name_or_path, config.model.build_tiny, passages)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="cfg_seal")
def main(cfg: DictConfig) -> None:
    config = to_dataclass(cfg)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        prepare_model(config)
        run_stage(config)
    except SealInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
