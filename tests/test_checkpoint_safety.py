"""Nothing loaded runs code; files that do not parse name themselves; a full disk keeps the old
checkpoints; checkpoint files get the usual mode. (Issue 10, security and file-level items.)"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import training.checkpoint as ckpt
from models.trm import ACTCarry, TRMInnerCarry
from training.optimizers import AdamATan2
from training.state import load_initial_weights, rng_state, set_rng_state
from utils.errors import UserError, exit_on_user_error
from utils.nested_state import flatten, read_nested, restore_dataclasses, unflatten, write_nested
from utils.tensor_files import TensorFileError

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pt(path: Path, marker: Path) -> Path:
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    return path


def _save(run, step, value=1.0, **kw):
    state = {"model.w": torch.full((2, 3), value), "model.inner.puzzle_emb.weights": torch.full((4, 2), value)}
    return ckpt.save_checkpoint(run, step, model_state=state, train_state={"step": step}, config_yaml="lr: 1\n",
                                identifiers=["<blank>", "a"], **kw)


# ----- train state: tensors in safetensors, the rest in JSON, nothing pickled ------------------------

def test_train_state_round_trip_restores_rngs_optimizer_and_carry_exactly(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # a cached gaussian in numpy's state
    w = torch.nn.Parameter(torch.randn(3, 2))
    opt = AdamATan2([w], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    w.grad = torch.randn(3, 2)
    opt.step()
    carry = ACTCarry(inner_carry=TRMInnerCarry(z_H=torch.randn(2, 4).bfloat16(), z_L=torch.randn(2, 4)),
                     steps=torch.tensor([1, 2], dtype=torch.int32), halted=torch.tensor([True, False]),
                     current_data={"inputs": torch.arange(8, dtype=torch.int32).view(2, 4)})
    state = {"step": 7, "lr": 1 / 3, "loader": {"pass": 1, "batches_done": 5}, "rng": rng_state(torch.device("cpu")),
             "optimizers": [opt.state_dict()], "carry": carry, "none": None, "nan": float("nan")}
    write_nested(tmp_path, "train_state", state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.json", "train_state.safetensors"]
    json.loads((tmp_path / "train_state.json").read_text())  # plain JSON (NaN as the JSON extension)
    expected = (random.random(), np.random.randn(), torch.rand(3))  # the draws after the saved state
    back = read_nested(tmp_path, "train_state")
    set_rng_state(back["rng"], torch.device("cpu"))
    assert (random.random(), np.random.randn()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
    assert back["step"] == 7 and back["lr"] == 1 / 3 and back["none"] is None and back["nan"] != back["nan"]
    opt2 = AdamATan2([torch.nn.Parameter(w.detach().clone())], lr=0.5)
    opt2.load_state_dict(back["optimizers"][0])
    assert opt2.state_dict()["param_groups"][0]["betas"] == (0.9, 0.95)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(opt2.state_dict()["state"][0][key], opt.state_dict()["state"][0][key])
    template = ACTCarry(inner_carry=TRMInnerCarry(z_H=torch.zeros(1), z_L=torch.zeros(1)), steps=torch.zeros(1),
                        halted=torch.zeros(1), current_data={})
    restored = restore_dataclasses(template, back["carry"])
    assert type(restored) is ACTCarry and type(restored.inner_carry) is TRMInnerCarry and restored.outputs is None
    assert restored.inner_carry.z_H.dtype == torch.bfloat16 and torch.equal(restored.inner_carry.z_H, carry.inner_carry.z_H)
    assert torch.equal(restored.current_data["inputs"], carry.current_data["inputs"])


def test_unsupported_objects_are_refused_when_saving_not_pickled():
    with pytest.raises(TypeError, match=r"loader\.f.*function"):
        flatten({"loader": {"f": print}})
    tensors, skeleton = flatten({(1, 2): torch.ones(1), 3: "x"})  # non-string keys survive the JSON trip
    assert unflatten(tensors, json.loads(json.dumps(skeleton))) == {(1, 2): torch.ones(1), 3: "x"}


def test_resume_never_unpickles_a_train_state_pt(tmp_path):
    """A run folder in the old layout whose train_state.pt runs code when unpickled (e.g. downloaded)."""
    from tests.dataset_fixtures import write_tiny_dataset
    from tests.test_pretrain import tiny_cfg
    from training.trainer import Trainer

    data, run, marker = tmp_path / "data", tmp_path / "run", tmp_path / "PWNED"
    write_tiny_dataset(data, num_tasks=2, augs_per_task=0, examples_per_puzzle=1)
    folder = _save(run, 3)
    for name in ("train_state.json", "train_state.safetensors"):
        (folder / name).unlink(missing_ok=True)  # (absent in the old layout)
    _evil_pt(folder / "train_state.pt", marker)
    with pytest.raises(UserError, match="train_state.pt: .*old pickle format.*not read") as info:
        Trainer(tiny_cfg(data, run, "global_batch_size=2"))
    assert not marker.exists() and "weights_only" not in str(info.value)


@pytest.mark.parametrize("kind", ["payload", "truncated", "foreign"])
def test_load_checkpoint_pt_refused_or_damaged_names_the_file(tmp_path, kind):
    marker, path = tmp_path / "PWNED", tmp_path / "weights.pt"
    if kind == "payload":
        _evil_pt(path, marker)
        pickle.dumps(Payload(marker))  # sanity: the payload pickles (and would run on a full unpickle)
    elif kind == "truncated":
        torch.save({"w": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_text("hello, not a checkpoint")
    with pytest.raises(TensorFileError) as info:
        load_initial_weights(torch.nn.Linear(1, 1), str(path), "mean")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "weights_only" not in message
    assert ("refused" in message) == (kind == "payload")
    assert not marker.exists()


def test_pretrain_cli_refuses_malicious_load_checkpoint_in_one_line(tmp_path):
    from tests.dataset_fixtures import write_tiny_dataset

    data, marker = tmp_path / "data", tmp_path / "PWNED"
    write_tiny_dataset(data, num_tasks=2, augs_per_task=0, examples_per_puzzle=1)
    evil = _evil_pt(tmp_path / "reference.pt", marker)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "pretrain.py"), "--config-name", "cfg_tiny_cpu",
                             f"data_paths=[{data}]", f"checkpoint_path={tmp_path / 'run'}", "device=cpu",
                             f"load_checkpoint={evil}", "wandb_mode=disabled", "evaluators=[]"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: {evil}: refused: it holds a Python object (posix.system) beyond tensors and plain containers, "
        "and reading it could run code"]
    assert not marker.exists() and "weights_only" not in result.stderr


# ----- damaged or foreign files name themselves ----------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "foreign", "nan"])
def test_damaged_safetensors_names_the_file(tmp_path, damage):
    folder = _save(tmp_path, 1)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "foreign":
        weights.write_bytes(b"PK\x03\x04 a zip, not safetensors" * 4)
    else:
        from safetensors.torch import save_file

        save_file({"model.w": torch.tensor([1.0, float("nan")])}, str(weights))
    for load in (ckpt.load_checkpoint, ckpt.load_weights):
        with pytest.raises(TensorFileError) as info:
            load(folder)
        assert str(info.value).startswith(f"{weights}: ") and "\n" not in str(info.value)
    if damage == "nan":
        assert "tensor model.w holds NaN or inf" in str(info.value)


def test_damaged_train_state_json_names_the_file(tmp_path):
    folder = _save(tmp_path, 1)
    (folder / "train_state.json").write_text('{"step": ')
    with pytest.raises(TensorFileError, match=r"train_state\.json: not valid JSON"):
        ckpt.load_checkpoint(folder)


def test_export_cli_on_a_damaged_checkpoint_prints_one_line_and_exits_2(tmp_path, capsys):
    from checkpoint_tools.export import main

    folder = _save(tmp_path / "run", 1)
    (folder / "model.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(SystemExit) as info:
        main([str(folder), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {folder / 'model.safetensors'}: ")
    assert not (tmp_path / "out").exists()


def test_full_disk_during_a_checkpoint_names_it_and_keeps_the_earlier_ones(tmp_path, monkeypatch):
    _save(tmp_path, 1)

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "write_nested", disk_full)  # the last file of the folder
    with pytest.raises(ckpt.DiskFullError) as info:
        _save(tmp_path, 2, 2.0)
    assert str(info.value).startswith(f"no space left on device: {tmp_path / 'step_00000002'}")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001"]  # no step_2, no temporary folder
    assert torch.equal(ckpt.load_checkpoint(tmp_path / "step_00000001").model_state["model.w"], torch.ones(2, 3))
    with pytest.raises(SystemExit) as stop, exit_on_user_error():
        raise info.value
    assert stop.value.code == 2


def test_checkpoint_files_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        folder = _save(tmp_path, 1, ema_state={"model.w": torch.zeros(1)})
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes == {name: 0o644 for name in modes} and "ema.safetensors" in modes
    assert folder.stat().st_mode & 0o777 == 0o755
