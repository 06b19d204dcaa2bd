"""Shared SEAL test helpers: a tiny local Llama model, a memorisable task, tiny configs."""

from __future__ import annotations

import pytest

from seal.config import (
    DataConfig, EvalConfig, LoraSettings, ModelConfig, RestemConfig, SealConfig, SelfEditConfig,
    StageConfig, TTTConfig,
)
from seal.tiny_data import CONSTANT, MEMORISE_RECIPE, MEMORISE_RESPONSE, constant_task  # noqa: F401


def tiny_config(run_dir, model_dir, stage: str = "loop", **stage_kwargs) -> SealConfig:
    return SealConfig(
        run_dir=str(run_dir),
        stage=StageConfig(name=stage, **stage_kwargs),
        model=ModelConfig(name_or_path=str(model_dir), gradient_checkpointing=True, device="cpu"),
        lora=LoraSettings(r=8, alpha=16),
        ttt=TTTConfig(max_examples=16, max_tokens=2048, warmup_steps=2, max_steps=375, fixed_recipe=MEMORISE_RECIPE),
        # Low temperature: the tiny model learns a recipe only well enough for near-greedy sampling.
        self_edit=SelfEditConfig(num_recipes=1, max_attempts=2, max_new_tokens=128, temperature=0.1),
        evaluate=EvalConfig(num_permutations=1, geometric=["transpose", "rot90"], max_new_tokens=16),
        restem=RestemConfig(lora=LoraSettings(r=16, alpha=32), num_train_epochs=30, learning_rate=1e-2, batch_size=1),
        data=DataConfig(preset=None),
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from seal.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), seed=0)
