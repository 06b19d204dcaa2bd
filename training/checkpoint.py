"""Checkpoint folders: write atomically, find the newest complete one, read back, keep the newest K.

Layout of ``<run dir>/step_<step:08d>/`` (CONTRACTS.md; read by evaluate.py, utils/push_to_hf, kaggle/):
    model.safetensors   model state dict, puzzle-embedding table ``...puzzle_emb.weights`` included
    ema.safetensors     averaged weights (runs with ema=True)
    config.yaml         the resolved configuration of the run
    identifiers.json    puzzle identifier names, one per row of the embedding table
    train_state.json    optimizers, step / iteration, loader position, RNG states, ACT carry policy
    train_state.safetensors   (and the carry itself under carry_on_resume=restore): the tensors of
                        train_state.json, which refers to them by key (utils/nested_state.py)
    health.json         whether these weights are "good" (training/divergence.py)
    metrics.json, submission.json   when an evaluation ran just before

Nothing in a checkpoint is unpickled: weights and state tensors are safetensors, the rest JSON/YAML.
The folder is built under a temporary name and renamed into place (utils.io.atomic_directory), so a
crash mid-write leaves the previous checkpoints as they were and no half-written ``step_*`` folder.
Weights with NaN or inf are refused before anything is written, and again when read.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from utils.errors import UserError
from utils.io import atomic_directory
from utils.nested_state import read_nested, write_nested
from utils.tensor_files import (TensorFileError, non_finite_tensors, read_safetensors, read_torch_file,
                                write_safetensors)

STEP_DIR = re.compile(r"^step_(\d+)$")
TRAIN_STATE = "train_state"  # train_state.json + train_state.safetensors
REQUIRED_FILES = ("model.safetensors", f"{TRAIN_STATE}.json", f"{TRAIN_STATE}.safetensors", "config.yaml")
LEGACY_TRAIN_STATE = "train_state.pt"  # pickled by earlier versions: never read


class NonFiniteWeightsError(UserError):
    """Raised instead of writing a checkpoint whose weights hold NaN or inf (a diverged run: exit 3)."""

    exit_code = 3


class CheckpointError(TensorFileError):
    """A checkpoint (or weights file) that cannot be used; the message names the file and why."""


class DiskFullError(UserError):
    pass


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"step_{step:08d}"


def _cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors that share no storage.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(run_dir: str | Path, step: int, *, model_state: dict[str, torch.Tensor],
                    train_state: dict[str, Any], config_yaml: str, identifiers: list[str] | None = None,
                    ema_state: dict[str, torch.Tensor] | None = None, metrics: dict[str, float] | None = None,
                    extra_files: dict[str, Path] | None = None, keep: int = 0,
                    health: dict[str, Any] | None = None) -> Path:
    """Write ``step_<step>`` under ``run_dir`` atomically and prune to the newest ``keep`` (0 = all)."""
    model_state = _cpu_tensors(model_state)
    bad = non_finite_tensors(model_state) + [f"ema:{k}" for k in non_finite_tensors(ema_state or {})]
    if bad:
        raise NonFiniteWeightsError(f"not saving step {step}: non-finite values in {bad[:5]}; "
                                    f"the previous checkpoints in {run_dir} are kept")
    target = checkpoint_dir(run_dir, step)
    try:
        with atomic_directory(target) as tmp:
            write_safetensors(tmp / "model.safetensors", model_state)
            if ema_state is not None:
                write_safetensors(tmp / "ema.safetensors", _cpu_tensors(ema_state))
            (tmp / "config.yaml").write_text(config_yaml)
            if identifiers is not None:
                (tmp / "identifiers.json").write_text(json.dumps(identifiers))
            if metrics is not None:
                (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
            if health is not None:
                (tmp / "health.json").write_text(json.dumps(health, indent=1))
            for name, source in (extra_files or {}).items():
                shutil.copyfile(source, tmp / name)
            write_nested(tmp, TRAIN_STATE, train_state)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"no space left on device: {target} (not written; the earlier checkpoints "
                                f"in {run_dir} are kept)") from None
        raise
    if keep > 0:
        prune_checkpoints(run_dir, keep)
    return target


def step_folders(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Every ``step_*`` folder under ``run_dir``, complete or not, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), child) for child in run_dir.iterdir()
             if (m := STEP_DIR.match(child.name)) and child.is_dir()]
    return sorted(found)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders under ``run_dir``, oldest first."""
    return [(step, path) for step, path in step_folders(run_dir) if all((path / f).is_file() for f in REQUIRED_FILES)]


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


def check_finite(state: dict[str, torch.Tensor], source: Path) -> None:
    bad = non_finite_tensors(state)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise CheckpointError(f"{source}: tensor {bad[0]} holds NaN or inf{more}; these weights cannot be used")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Read a checkpoint folder written by save_checkpoint (FileNotFoundError naming what is missing,
    CheckpointError naming a file that does not parse or holds non-finite weights)."""
    path = Path(path)
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        if (path / LEGACY_TRAIN_STATE).is_file() and (path / "model.safetensors").is_file():
            raise CheckpointError(f"{path / LEGACY_TRAIN_STATE}: training state in the old pickle format, which is "
                                  "not read (unpickling can run code); start from these weights with "
                                  f"load_checkpoint={path} instead")
        raise FileNotFoundError(f"{path}: not a complete checkpoint (missing {', '.join(missing)})")
    device = str(map_location)
    model_state = read_safetensors(path / "model.safetensors", device=device)
    check_finite(model_state, path / "model.safetensors")
    ema_file = path / "ema.safetensors"
    ema_state = read_safetensors(ema_file, device=device) if ema_file.is_file() else None
    if ema_state is not None:
        check_finite(ema_state, ema_file)
    train_state = read_nested(path, TRAIN_STATE, device=device)
    if not isinstance(train_state, dict):
        raise CheckpointError(f"{path / (TRAIN_STATE + '.json')}: not a train state written by this framework")
    return LoadedCheckpoint(path=path, model_state=model_state, ema_state=ema_state, train_state=train_state,
                            config_yaml=(path / "config.yaml").read_text())


def choose_resume_checkpoint(run_dir: str | Path, say: Callable[[str], None] = print,
                             usable: Callable[[Path], str | None] = lambda path: None) -> LoadedCheckpoint | None:
    """The newest ``step_*`` folder that loads completely, as loaded (None when there is none at all).

    A damaged newer folder (a truncated file, a missing one) is skipped, saying which and why;
    ``usable(path)`` may veto a folder that loads by returning the reason (e.g. known diverged weights).
    Folders exist but none loads: a CheckpointError listing them, rather than silently starting over.
    """
    skipped = []
    for _, path in reversed(step_folders(run_dir)):
        try:
            loaded = load_checkpoint(path)
            reason = usable(path)
        except (FileNotFoundError, TensorFileError, OSError, ValueError) as exc:
            reason = str(exc)
        if reason is None:
            return loaded  # the caller resumes from it as it is (a 2 GB table is read once)
        say(f"resume: skipped {path.name}: {reason}")
        skipped.append(f"{path.name} ({reason})")
    if skipped:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from loads: " + "; ".join(skipped)
                              + " (resume=false starts over; load_checkpoint= starts from chosen weights)")
    return None


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a checkpoint folder, a .safetensors file, or a reference ``.pt`` file
    (a bare state dict, or a dict with a ``model`` entry; ``_orig_mod.`` prefixes are stripped).
    ``.pt`` files are read with torch.load(weights_only=True): tensors and plain containers only."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: {path} does not exist")
    if path.suffix == ".safetensors":
        state = read_safetensors(path)
    else:
        state = read_torch_file(path)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state dict (a mapping of names to tensors)")
    check_finite(state, path)
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}
