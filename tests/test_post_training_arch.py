"""Post-training (load_checkpoint=) builds the checkpoint's architecture, whatever the YAML says.

A tiny TRM (hidden 32, L_cycles 3) is pre-trained once; each post-training config (which inherits
cfg_pretrain.yaml's 512-wide, L_cycles=6 arch) must build that tiny model from it, let a
command-line override that still loads win (arch.L_cycles), and refuse one that cannot load
(arch.hidden_size), naming the field and both values.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

import pretrain
from kaggle.run_kaggle import compose_config
from models.config import ArchConfig
from models.lora import lora_layers, maybe_apply_lora
from models.registry import build_model, count_parameters, parameter_summary
from tests.dataset_fixtures import write_tiny_dataset
from training.checkpoint import list_checkpoints
from training.checkpoint_config import ArchMismatchError, cli_arch_keys, merge_arch
from training.config import to_pretrain_config
from training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(REPO / "config")
PRETRAIN_ARCH = ["arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=1", "arch.L_cycles=3",
                 "arch.puzzle_emb_ndim=32", "arch.puzzle_emb_len=1", "arch.halt_max_steps=2"]
QUIET = ["evaluators=[]", "wandb_mode=disabled", "log_interval=0", "device=cpu", "compile=false", "autocast=false"]
POST_CONFIGS = ["cfg_pretrain_lora", "cfg_emb_posttrain", "cfg_kaggle_lora"]


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, run folder) of a 2-step tiny pre-training."""
    root = tmp_path_factory.mktemp("pre")
    data = root / "data"
    write_tiny_dataset(data, num_tasks=3, augs_per_task=1, examples_per_puzzle=2)
    run = root / "run"
    pretrain.train(compose_cfg("cfg_tiny_cpu", [f"data_paths=[{data}]", f"checkpoint_path={run}", *PRETRAIN_ARCH,
                                                *QUIET, "global_batch_size=4", "epochs=1", "eval_interval=1"]))
    return data, run


def post_overrides(data: Path, checkpoint: Path, run: Path, *extra: str) -> list[str]:
    return [f"data_paths=[{data}]", "data_paths_test=[]", f"load_checkpoint={checkpoint}", f"checkpoint_path={run}",
            *QUIET, "global_batch_size=4", "epochs=1", "eval_interval=1", *extra]


def build_trainer(name: str, overrides: list[str]) -> Trainer:
    return Trainer(to_pretrain_config(compose_cfg(name, overrides)), arch_set_on_command_line=cli_arch_keys(overrides))


@pytest.mark.parametrize("name", POST_CONFIGS)
def test_post_training_takes_the_checkpoints_architecture(pretrained, tmp_path, name, capsys):
    data, run = pretrained
    assert compose_cfg(name, []).arch.hidden_size == 512  # what the YAML alone would build
    trainer = build_trainer(name, post_overrides(data, run, tmp_path / "post"))
    try:
        arch = trainer.cfg.arch
        assert (arch.hidden_size, arch.num_heads, arch.L_layers, arch.H_cycles, arch.L_cycles, arch.puzzle_emb_ndim,
                arch.halt_max_steps) == (32, 2, 1, 1, 3, 32, 2)
        assert arch.lora_rank == (0 if name == "cfg_emb_posttrain" else 1)  # LoRA settings stay the run's
        # The weights are the checkpoint's (LoRA B starts at zero, so merging changes nothing).
        saved = yaml.safe_load((list_checkpoints(run)[-1][1] / "config.yaml").read_text())
        assert saved["arch"]["L_cycles"] == 3
        out = capsys.readouterr().out
        assert "architecture from " in out and "L_cycles=3" in out and "L_cycles 3 (config said 6)" in out
        assert "weights," in out and "trainable" in out
    finally:
        trainer.close()


@pytest.mark.parametrize("name", POST_CONFIGS)
def test_a_command_line_override_that_loads_wins(pretrained, tmp_path, name, capsys):
    data, run = pretrained
    trainer = build_trainer(name, post_overrides(data, run, tmp_path / "post", "arch.L_cycles=5"))
    try:
        assert trainer.cfg.arch.L_cycles == 5 and trainer.cfg.arch.hidden_size == 32
        assert "command line: L_cycles=5 (checkpoint 3)" in capsys.readouterr().out
    finally:
        trainer.close()


@pytest.mark.parametrize("name", POST_CONFIGS)
def test_an_override_that_cannot_load_is_refused_naming_both_values(pretrained, tmp_path, name):
    data, run = pretrained
    with pytest.raises(ArchMismatchError, match=r"arch\.hidden_size=64 cannot load .*trained with arch\.hidden_size=32"):
        build_trainer(name, post_overrides(data, run, tmp_path / "post", "arch.hidden_size=64", "arch.num_heads=2"))
    assert not (tmp_path / "post").exists()  # refused before anything was written


def test_kaggle_runner_uses_the_same_mechanism(pretrained, tmp_path):
    """run_kaggle composes its preset with the user's overrides and hands the trainer their arch keys."""
    data, run = pretrained
    user = ["arch.L_cycles=5"]
    cfg = compose_config("cfg_kaggle_lora", post_overrides(data, run, tmp_path / "k") + user)
    assert cfg.arch.hidden_size == 512  # the preset as composed; the trainer takes the checkpoint's
    trainer = Trainer(cfg, arch_set_on_command_line=cli_arch_keys(user))
    try:
        assert (trainer.cfg.arch.hidden_size, trainer.cfg.arch.L_cycles, trainer.cfg.arch.lora_rank) == (32, 5, 1)
    finally:
        trainer.close()


def test_reference_all_config_yaml_and_step_file(pretrained, tmp_path):
    """A reference checkpoint: a bare state-dict file step_N beside all_config.yaml (reference spellings)."""
    data, run = pretrained
    folder = tmp_path / "reference"
    folder.mkdir()
    ours = list_checkpoints(run)[-1][1]
    from training.checkpoint import load_weights

    torch.save({f"_orig_mod.{k}": v for k, v in load_weights(ours).items()}, folder / "step_7")
    arch = yaml.safe_load((ours / "config.yaml").read_text())["arch"]
    arch["name"] = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
    arch["loss"]["name"] = "losses@ACTLossHead"
    arch = {k: v for k, v in arch.items() if not k.startswith("lora_") and k != "adaptive_halting"}
    (folder / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch, "data_paths": [str(data)],
                                                            "global_batch_size": 768, "some_reference_key": 1}))
    trainer = build_trainer("cfg_pretrain_lora", post_overrides(data, folder / "step_7", tmp_path / "post"))
    try:
        assert (trainer.cfg.arch.hidden_size, trainer.cfg.arch.L_cycles) == (32, 3)
    finally:
        trainer.close()


def test_refusal_is_one_line_and_exit_2_from_the_command_line(pretrained, tmp_path):
    data, run = pretrained
    cmd = [sys.executable, str(REPO / "pretrain.py"), "--config-name", "cfg_pretrain_lora",
           *post_overrides(data, run, tmp_path / "post", "arch.hidden_size=64")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: arch.hidden_size=64 cannot load {run / list_checkpoints(run)[-1][1].name / 'config.yaml'}: "
        "it was trained with arch.hidden_size=32 (drop the override)"]


def test_cli_arch_keys():
    assert cli_arch_keys(["arch.L_cycles=4", "+arch.mlp_t=true", "arch.loss.loss_type=x", "lr=1", "arch=hrm",
                          "~arch.expansion", "data_paths=[a]"]) == {"L_cycles", "mlp_t", "loss", "name", "expansion"}


def test_merge_arch_allows_shape_preserving_overrides_and_names_refusals():
    ckpt = ArchConfig(hidden_size=64, num_heads=4, L_layers=1, puzzle_emb_ndim=64, puzzle_emb_len=1)
    run = ArchConfig(num_heads=2, lora_rank=1)  # YAML values (512 wide) plus a num_heads override
    merged, text = merge_arch(run, ckpt, {"num_heads"}, "ck")
    assert (merged.hidden_size, merged.num_heads, merged.lora_rank) == (64, 2, 1)  # same shapes: loads
    cpu_trained = ArchConfig(hidden_size=64, num_heads=4, forward_dtype="float32", H_cycles=2)
    merged, _ = merge_arch(ArchConfig(forward_dtype="bfloat16"), cpu_trained, set(), "ck")
    assert (merged.forward_dtype, merged.H_cycles) == ("bfloat16", 2)  # hardware stays the run's
    for key, value in (("L_layers", 2), ("expansion", 8.0), ("puzzle_emb_ndim", 32), ("name", "hrm"),
                       ("pos_encodings", "learned")):
        with pytest.raises(ArchMismatchError, match=rf"arch\.{key}="):
            merge_arch(ArchConfig(**{key: value}), ckpt, {key}, "ck")


def test_rank_1_lora_on_the_arc_trm_has_18446_adapter_weights():
    """The Trelis fork's figure: rank-1 adapters on every linear layer of the 512-wide ARC TRM."""
    arch = ArchConfig(lora_rank=1, forward_dtype="float32")  # the defaults are the ARC TRM (config/arch/trm.yaml)
    head = build_model(arch, batch_size=1, seq_len=900, vocab_size=12, num_puzzle_identifiers=10)
    dense = count_parameters(head)
    maybe_apply_lora(head, arch)
    for name, p in head.named_parameters():
        p.requires_grad_(".lora_" in name)
    # Independent count: a rank-1 adapter on a (out x in) layer has in + out weights.
    expected = sum(m.weight.shape[0] + m.weight.shape[1] for m in lora_layers(head).values())
    assert expected == 18_446
    assert parameter_summary(head) == (f"{dense + 18_446:,} weights, 18,446 trainable (18,446 in LoRA adapters); "
                                       "puzzle table 10 x 512 (trains by sign-SGD)")
