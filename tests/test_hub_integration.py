"""Hub ids through the real entry points, offline: evaluate.py, pretrain with load_checkpoint=org/repo (dense and
LoRA runs), and hub_repo_id= pushes from the trainer. The Hub cache is a folder built here (tests/test_hub.py's
layout), HF_HUB_OFFLINE=1 and sockets refuse to connect; uploads go to a local fake."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

import pretrain
from evaluate import EvaluateConfig, run_evaluation
from models.lora import merge_lora_state_dict
from tests.dataset_fixtures import write_tiny_dataset
from tests.test_hub import build_cache
from training.checkpoint import list_checkpoints
from training.config import to_pretrain_config
from training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = ["arch=trm_tiny", "arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=1",
        "arch.L_cycles=1", "arch.puzzle_emb_ndim=32", "arch.puzzle_emb_len=1", "arch.halt_max_steps=2",
        "arch.forward_dtype=float32"]
QUIET = ["evaluators=[]", "wandb_mode=disabled", "log_interval=0", "device=cpu", "compile=false", "autocast=false",
         "global_batch_size=4", "lr_warmup_steps=1"]
TABLE = "model.inner.puzzle_emb.weights"


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def newest(run: Path) -> Path:
    return list_checkpoints(run)[-1][1]


def cache_checkpoint(cache: Path, repo_id: str, folder: Path, commit: str) -> None:
    build_cache(cache, repo_id, commit, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})


@pytest.fixture(autouse=True)
def offline(monkeypatch, hub):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict:
    """A dense checkpoint trained for 4 steps on dataset `a`, cached as the Hub repo org/trm."""
    root = tmp_path_factory.mktemp("hub")
    write_tiny_dataset(root / "a", num_tasks=3, augs_per_task=1, examples_per_puzzle=2)
    write_tiny_dataset(root / "new", num_tasks=1, augs_per_task=1, examples_per_puzzle=2, seed=1, task_prefix="new")
    pretrain.train(compose_cfg("cfg_tiny_cpu", [f"data_paths=[{root / 'a'}]", f"checkpoint_path={root / 'src'}",
                                                *TINY, *QUIET, "lr=1e-2", "max_steps=4"]))
    folder = newest(root / "src")
    cache_checkpoint(root / "cache", "org/trm", folder, "a" * 40)
    return {"root": root, "data": root / "a", "new": root / "new", "folder": folder, "cache": root / "cache"}


def test_evaluate_hub_id_equals_the_local_folder(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = dict(data_paths_test=[str(hub["data"])], device="cpu", report=False)
    local = run_evaluation(EvaluateConfig(checkpoint=str(hub["folder"]), output_dir=str(tmp_path / "local"), **common))
    remote = run_evaluation(EvaluateConfig(checkpoint="org/trm", **common))
    assert remote == local and "ARC/pass@2" in local
    out = tmp_path / "outputs" / "evaluation" / "org--trm"  # beside the run, never inside the HF cache
    assert (out / "submission.json").read_bytes() == (tmp_path / "local" / "submission.json").read_bytes()
    assert not list(hub["cache"].rglob("submission.json"))


def test_pretrain_starts_from_the_hub_weights_rows_matched_by_name(hub, tmp_path):
    # Another dataset in front: the checkpoint's puzzles sit at other row numbers, plus two new puzzles.
    run = tmp_path / "run"
    pretrain.train(compose_cfg("cfg_tiny_cpu", [f"data_paths=[{hub['new']},{hub['data']}]", f"checkpoint_path={run}",
                                                "load_checkpoint=org/trm", *TINY, *QUIET, "freeze_weights=True", "puzzle_emb_lr=0",
                                                "max_steps=1"]))
    source, started = load_file(str(hub["folder"] / "model.safetensors")), load_file(str(newest(run) / "model.safetensors"))
    assert source.keys() == started.keys()
    for key in source:
        if key != TABLE:
            assert torch.equal(started[key], source[key]), key
    old_ids = json.loads((hub["folder"] / "identifiers.json").read_text())
    new_ids = json.loads((newest(run) / "identifiers.json").read_text())
    assert new_ids.index("task000") == old_ids.index("task000") + 3 and sum(n not in old_ids for n in new_ids) == 2
    for row, name in enumerate(new_ids):
        if name in old_ids:
            assert torch.equal(started[TABLE][row], source[TABLE][old_ids.index(name)]), name
        else:  # strategy "mean": the mean of the trained rows (blank excluded)
            torch.testing.assert_close(started[TABLE][row], source[TABLE][1:].mean(0))


def test_lora_finetune_through_pretrain_then_load_the_lora_checkpoint(hub, tmp_path):
    def lora_cfg(run: Path, source: str, *extra: str):
        return compose_cfg("cfg_pretrain_lora", [f"data_paths=[{hub['data']}]", f"data_paths_test=[{hub['data']}]",
                                                 f"checkpoint_path={run}", f"load_checkpoint={source}", *TINY, *QUIET,
                                                 "epochs=2", "eval_interval=2", "eval_max_augmentations=1", "lr=1e-2",
                                                 *extra])

    pretrain.train(lora_cfg(tmp_path / "lora", "org/trm", "max_steps=3"))
    source = load_file(str(hub["folder"] / "model.safetensors"))
    tuned_folder = newest(tmp_path / "lora")
    tuned = load_file(str(tuned_folder / "model.safetensors"))
    adapters = [k for k in tuned if ".lora_" in k]
    assert sorted(set(tuned) - set(source)) == sorted(adapters) and adapters
    assert any(torch.count_nonzero(tuned[k]) for k in adapters if k.endswith("lora_B"))
    for key in source:  # the base weights are frozen; only the adapters and the puzzle rows moved
        assert torch.equal(tuned[key], source[key]) == (key != TABLE), key

    # A LoRA checkpoint as load_checkpoint: adapters folded into the weights, fresh ones (any rank) on top.
    cache_checkpoint(hub["cache"], "org/trm-lora", tuned_folder, "c" * 40)
    merged = merge_lora_state_dict(tuned)
    assert not torch.equal(merged["model.inner.lm_head.weight"], source["model.inner.lm_head.weight"])
    for rank in (2, 0):
        trainer = Trainer(to_pretrain_config(lora_cfg(tmp_path / f"again{rank}", "org/trm-lora",
                                                      f"arch.lora_rank={rank}")))
        state = trainer.head.state_dict()
        trainer.close()
        for key, value in merged.items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=1e-6, msg=key)
        fresh = {k: v for k, v in state.items() if ".lora_" in k}
        assert bool(fresh) == (rank > 0)
        assert all(not torch.count_nonzero(v) for k, v in fresh.items() if k.endswith("lora_B"))
        assert all(v.shape[0] == rank for k, v in fresh.items() if k.endswith("lora_A"))


def test_hub_repo_id_pushes_every_checkpoint_and_a_failed_push_does_not_stop_training(hub, tmp_path, monkeypatch,
                                                                                      caplog):
    import training.hub

    pushed: list[dict] = []

    def fake_push(folder, repo_id, **kwargs):  # stands in for the upload; the first one fails
        pushed.append({"step": Path(folder).name, "repo": repo_id, "private": kwargs.get("private"),
                       "files": sorted(p.name for p in Path(folder).iterdir()),
                       "model": (Path(folder) / "model.safetensors").read_bytes()})
        if len(pushed) == 1:
            raise ConnectionError("hub unreachable")
        return f"https://huggingface.co/{repo_id}"

    monkeypatch.setattr(training.hub, "push_checkpoint", fake_push)
    monkeypatch.setenv("HF_TOKEN", "hf_fakeFAKEfake1234567890")
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        pretrain.train(compose_cfg("cfg_tiny_cpu", [f"data_paths=[{hub['data']}]", f"checkpoint_path={run}", *TINY,
                                                    *QUIET, "hub_repo_id=org/pushed", "hub_exclude=[train_state.*]",
                                                    "checkpoint_every_n_steps=1", "checkpoint_keep=2", "max_steps=3"]))
    assert [p["step"] for p in pushed] == ["step_00000001", "step_00000002", "step_00000003"]
    assert {p["repo"] for p in pushed} == {"org/pushed"} and all(p["private"] for p in pushed)
    assert all("model.safetensors" in p["files"] and not any(f.startswith("train_state") for f in p["files"]) for p in pushed)
    assert [s for s, _ in list_checkpoints(run)] == [2, 3]  # training went on after the failed push
    assert pushed[-1]["model"] == (run / "step_00000003" / "model.safetensors").read_bytes()
    assert "hub unreachable" in caplog.text and not list(run.glob(".push_*"))
