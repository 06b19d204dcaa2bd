"""Configuration mistakes stop pretrain.py / evaluate.py at start-up with one line naming the key.

A key the schema lacks stops the run naming it and the nearest valid key, however it got in
(`+lrr=` appended by Hydra, `lrr=`, nested `arch.` keys, evaluator entries); values that cannot
be right stop before any process group, data or model exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from evaluate import EvaluateConfig
from training.cli import precheck_command_line
from training.config import PretrainConfig, check_world_size, register_configs, to_pretrain_config
from utils.errors import UserError
from utils.schema import unknown_key_message

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(REPO / "config")
register_configs()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}


def composed(*overrides: str, name: str = "cfg_tiny_cpu"):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.mark.parametrize("override, key, nearest", [
    ("+lrr=1e-3", "lrr", "lr"),
    ("+arch.hiden_size=64", "arch.hiden_size", "arch.hidden_size"),
    ("+arch.loss.los_type=x", "arch.loss.los_type", "arch.loss.loss_type"),
    ("+evaluators.0.submision_K=3", "evaluators.0.submision_K", "evaluators.0.submission_K"),
    ("+puzzle_emb_weight_decai=0", "puzzle_emb_weight_decai", "puzzle_emb_weight_decay"),
])
def test_appended_unknown_keys_stop_naming_the_nearest_key(override, key, nearest):
    cfg = composed("data_paths=[x]", override)  # Hydra accepts the `+` append...
    with pytest.raises(UserError) as info:  # ...the schema check does not
        to_pretrain_config(cfg)
    message = str(info.value)
    assert f"unknown key {key}" in message and f"did you mean {nearest}?" in message and "\n" not in message


def test_reference_plus_spellings_and_free_form_evaluator_kwargs_still_work():
    cfg = to_pretrain_config(composed("data_paths=[x]", "+run_name=r", "+project_name=p", "+checkpoint_path=c",
                                      "+load_checkpoint=l", "+eval_save_outputs=[inputs,preds]",
                                      "+evaluators.0.kwargs.anything=1", name="cfg_pretrain"))
    assert (cfg.run_name, cfg.project_name, cfg.checkpoint_path, cfg.load_checkpoint) == ("r", "p", "c", "l")
    assert cfg.evaluators[0].kwargs == {"anything": 1}


def test_hrm_data_path_spelling_is_one_training_folder():
    # HRM's README trains with `data_path=data/sudoku-extreme-1k-aug-1000` (a string, not a list).
    cfg = to_pretrain_config(composed("data_path=data/sudoku-extreme-1k-aug-1000", name="cfg_pretrain"))
    assert cfg.data_paths == ["data/sudoku-extreme-1k-aug-1000"]
    assert to_pretrain_config(composed("data_paths=[a,b]", name="cfg_pretrain")).data_paths == ["a", "b"]


def test_every_shipped_config_and_arch_passes_the_key_check():
    for name in ("cfg_pretrain", "cfg_tiny_cpu", "cfg_pretrain_lora", "cfg_emb_posttrain", "cfg_kaggle_lora"):
        to_pretrain_config(composed("data_paths=[x]", name=name))
    for arch in ("trm", "hrm", "transformers_baseline", "trm_tiny", "hrm_tiny", "transformers_baseline_tiny"):
        to_pretrain_config(composed("data_paths=[x]", f"arch={arch}", name="cfg_pretrain"))


def test_unknown_key_check_follows_the_dataclasses_not_a_list():
    # A field added to the schema later is known at once; the check walks nested dataclasses and lists.
    assert unknown_key_message({"lr": 1, "arch": {"hidden_size": 8, "loss": {"name": "x"}}}, PretrainConfig) is None
    assert unknown_key_message({"evaluators": [{"name": "arc"}, {"nme": "arc"}]}, PretrainConfig) == \
        "config: unknown key evaluators.1.nme; did you mean evaluators.1.name?"
    assert "use_ema" in unknown_key_message({"use_emaa": False}, EvaluateConfig)


@pytest.mark.parametrize("override, key", [
    ("lr=0", "lr"), ("lr=-1e-4", "lr"), ("weight_decay=-0.1", "weight_decay"),
    ("puzzle_emb_weight_decay=-1", "puzzle_emb_weight_decay"), ("puzzle_emb_lr=-1", "puzzle_emb_lr"),
    ("beta2=1.5", "beta2"), ("eval_global_batch_size=0", "eval_global_batch_size"),
    ("distributed=fsdp2", "distributed"), ("eval_interval=3", "eval_interval"),
])
def test_impossible_values_stop_naming_the_key(override, key):
    with pytest.raises(UserError, match=rf"^config: {key}\b"):
        to_pretrain_config(composed("data_paths=[x]", override))


def test_freeze_weights_without_puzzle_table_stops_at_validation():
    with pytest.raises(UserError, match="freeze_weights"):
        to_pretrain_config(composed("data_paths=[x]", "freeze_weights=true", "arch.puzzle_emb_ndim=0"))


def test_batch_must_divide_over_the_ranks():
    cfg = to_pretrain_config(composed("data_paths=[x]", "global_batch_size=8", "eval_global_batch_size=6"))
    check_world_size(cfg, 2)
    with pytest.raises(UserError, match="global_batch_size=8 is not divisible by the 3 ranks"):
        check_world_size(cfg, 3)
    with pytest.raises(UserError, match="eval_global_batch_size=6 is not divisible by the 4 ranks"):
        check_world_size(cfg, 4)


@pytest.mark.parametrize("argv, expected", [
    (["lrr=1"], "config: unknown key lrr; did you mean lr?"),
    (["--config-name", "cfg_tiny_cpu", "arch.hiden_size=3"], "config: unknown key arch.hiden_size; did you mean arch.hidden_size?"),
    (["epochs=abc"], "config: Error merging override epochs=abc: Value 'abc' of type 'str' could not be converted to Integer"),
])
def test_hydra_composition_errors_become_one_line(argv, expected):
    with pytest.raises(UserError) as info:
        precheck_command_line(argv, CONFIG_DIR, "cfg_pretrain", PretrainConfig)
    assert str(info.value) == expected


def test_precheck_accepts_valid_command_lines_and_leaves_other_flags_to_hydra():
    precheck_command_line(["arch=hrm", "+run_name=x", "lr=1e-3", "hydra.run.dir=."], CONFIG_DIR, "cfg_pretrain", PretrainConfig)
    precheck_command_line(["--cfg", "job", "lrr=1"], CONFIG_DIR, "cfg_pretrain", PretrainConfig)  # Hydra's to judge


@pytest.mark.parametrize("script, args, env, needle", [
    ("pretrain.py", ["+lrr=1e-3"], {}, "error: config: unknown key lrr; did you mean lr?"),
    ("pretrain.py", ["global_batch_size=7"], {"WORLD_SIZE": "2"}, "error: config: global_batch_size=7 is not divisible by the 2 ranks"),
    ("evaluate.py", ["checkpoint=x", "+use_emaa=false"], {}, "error: config: unknown key use_emaa; did you mean use_ema?"),
])
def test_entry_points_print_one_line_and_exit_2(tmp_path, script, args, env, needle):
    # data_paths points nowhere: reaching the data would give another message, so the check came first.
    extra = ["--config-name", "cfg_tiny_cpu", f"data_paths=[{tmp_path / 'none'}]"] if script == "pretrain.py" else []
    result = subprocess.run([sys.executable, str(REPO / script), *extra, *args], cwd=tmp_path, env={**ENV, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(needle), result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
