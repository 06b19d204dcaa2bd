"""Checkpoint folders: write atomically, find the newest complete one, read back, keep the newest K.

Layout of ``<run dir>/step_<step:08d>/`` (CONTRACTS.md; read by evaluate.py, utils/push_to_hf, kaggle/):
    model.safetensors   model state dict, puzzle-embedding table ``...puzzle_emb.weights`` included
    ema.safetensors     averaged weights (runs with ema=True)
    config.yaml         the resolved configuration of the run
    identifiers.json    puzzle identifier names, one per row of the embedding table
    train_state.pt      optimizers, step / iteration, loader position, RNG states, ACT carry policy
                        (and the carry itself under carry_on_resume=restore)
    metrics.json, submission.json   when an evaluation ran just before

The folder is built under a temporary name and renamed into place (utils.io.atomic_directory), so a
crash mid-write leaves the previous checkpoints as they were and no half-written ``step_*`` folder.
Weights with NaN or inf are refused before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from utils.io import atomic_directory

STEP_DIR = re.compile(r"^step_(\d+)$")
REQUIRED_FILES = ("model.safetensors", "train_state.pt", "config.yaml")


class NonFiniteWeightsError(RuntimeError):
    """Raised instead of writing a checkpoint whose weights hold NaN or inf."""


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"step_{step:08d}"


def _cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors that share no storage.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _non_finite_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]


def save_checkpoint(run_dir: str | Path, step: int, *, model_state: dict[str, torch.Tensor],
                    train_state: dict[str, Any], config_yaml: str, identifiers: list[str] | None = None,
                    ema_state: dict[str, torch.Tensor] | None = None, metrics: dict[str, float] | None = None,
                    extra_files: dict[str, Path] | None = None, keep: int = 0) -> Path:
    """Write ``step_<step>`` under ``run_dir`` atomically and prune to the newest ``keep`` (0 = all)."""
    model_state = _cpu_tensors(model_state)
    bad = _non_finite_keys(model_state) + [f"ema:{k}" for k in _non_finite_keys(ema_state or {})]
    if bad:
        raise NonFiniteWeightsError(f"not saving step {step}: non-finite values in {bad[:5]}; "
                                    f"the previous checkpoints in {run_dir} are kept")
    target = checkpoint_dir(run_dir, step)
    with atomic_directory(target) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; checkpoints are shared like any output
        save_file(model_state, str(tmp / "model.safetensors"))
        if ema_state is not None:
            save_file(_cpu_tensors(ema_state), str(tmp / "ema.safetensors"))
        (tmp / "config.yaml").write_text(config_yaml)
        if identifiers is not None:
            (tmp / "identifiers.json").write_text(json.dumps(identifiers))
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        torch.save(train_state, tmp / "train_state.pt")
    if keep > 0:
        prune_checkpoints(run_dir, keep)
    return target


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders under ``run_dir``, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for child in run_dir.iterdir():
        match = STEP_DIR.match(child.name)
        if match and child.is_dir() and all((child / f).is_file() for f in REQUIRED_FILES):
            found.append((int(match.group(1)), child))
    return sorted(found)


def find_latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    for _, path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class LoadedCheckpoint:
    path: Path
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None
    train_state: dict[str, Any]
    config_yaml: str


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Read a checkpoint folder written by save_checkpoint (FileNotFoundError naming what is missing)."""
    path = Path(path)
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: not a complete checkpoint (missing {', '.join(missing)})")
    device = str(map_location)
    ema_file = path / "ema.safetensors"
    # train_state.pt holds RNG states and the ACT carry (dataclasses): a file this framework wrote.
    train_state = torch.load(path / "train_state.pt", map_location=map_location, weights_only=False)
    return LoadedCheckpoint(
        path=path,
        model_state=load_file(str(path / "model.safetensors"), device=device),
        ema_state=load_file(str(ema_file), device=device) if ema_file.is_file() else None,
        train_state=train_state,
        config_yaml=(path / "config.yaml").read_text(),
    )


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a checkpoint folder, a .safetensors file, or a reference ``.pt`` file
    (a bare state dict, or a dict with a ``model`` entry; ``_orig_mod.`` prefixes are stripped)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: {path} does not exist")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"load_checkpoint: {path} holds no state dict")
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}
