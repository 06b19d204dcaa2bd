"""Pieces of the training state that are not the model: RNG states, initial weights, rank sync.

The loop's own counters (step, iteration, ACT carry) live on the Trainer; what a resume needs is
gathered into one dict by training/resume.py and written by training/checkpoint.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from models.compat import load_reference_state_dict
from models.lora import merge_lora_state_dict
from training.checkpoint import load_weights
from training.puzzle_rows import align_state_dict, read_table_stats
from training.hub import resolve_checkpoint

PUZZLE_TABLE_SUFFIX = "puzzle_emb.weights"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _cuda_index(device: torch.device | None) -> int:
    return device.index if device is not None and device.index is not None else torch.cuda.current_device()


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """RNG states of this process; on CUDA only ``device``'s generator (the others belong to other
    ranks, and a node with fewer GPUs could not restore a list of all of them)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    on_cuda = device is None or device.type == "cuda"
    if on_cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(_cuda_index(device))
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return
    index = _cuda_index(device)
    if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per visible device
        if index >= len(cuda):
            return
        cuda = cuda[index]
    torch.cuda.set_rng_state(cuda.cpu(), index)


def resize_puzzle_table(old: torch.Tensor, rows: int, strategy: str) -> torch.Tensor:
    """A table of ``rows`` rows initialised from a trained one of another size (fine-tuning on a new
    dataset): every row the ``mean`` of the old rows, or ``normal`` draws with the old rows'
    per-dimension mean and standard deviation (Trelis fork semantics)."""
    old32 = old.to(torch.float32)
    mean = old32.mean(dim=0, keepdim=True)
    if strategy == "mean":
        new = mean.expand(rows, old.shape[1])
    elif strategy == "normal":
        std = old32.std(dim=0, keepdim=True, unbiased=False).clamp_min(1e-6)
        new = torch.randn(rows, old.shape[1]) * std + mean
    else:
        raise ValueError(f"puzzle_emb_reinit_strategy={strategy!r}; valid: mean, normal")
    return new.to(old.dtype).contiguous()


def fit_weights(head: nn.Module, state: dict[str, torch.Tensor], checkpoint_dir: Path | None,
                identifiers: list[str] | None, reinit_strategy: str) -> list[str]:
    """Load a checkpoint's ``state`` into the loss head; returns notes to print.

    LoRA adapters in ``state`` are merged into their dense weights, so the run starts from the
    checkpoint's function whatever its own LoRA settings. Puzzle-table rows follow identifier names
    when the checkpoint folder has ``identifiers.json`` (known puzzles keep their trained rows); without
    it a table of another size is re-initialised, as the reference does. Reference key names load too.
    """
    state = merge_lora_state_dict(state)
    notes = []
    id_file = checkpoint_dir / "identifiers.json" if checkpoint_dir is not None else None
    if identifiers is not None and id_file is not None and id_file.is_file():
        state, report = align_state_dict(state, json.loads(id_file.read_text()), list(identifiers),
                                         reinit_strategy, stats=read_table_stats(checkpoint_dir))
        if report is not None and report.added + report.dropped:
            notes.append(f"puzzle table fitted to the dataset by name: {report}")
    own = head.state_dict()
    for key in [k for k in own if k.endswith(PUZZLE_TABLE_SUFFIX)]:
        theirs = next((k for k in state if k.endswith(PUZZLE_TABLE_SUFFIX)), None)
        if theirs is not None and state[theirs].shape != own[key].shape:
            notes.append(f"puzzle table {tuple(state[theirs].shape)} -> {tuple(own[key].shape)}: "
                         f"re-initialised ({reinit_strategy})")
            state[theirs] = resize_puzzle_table(state[theirs], own[key].shape[0], reinit_strategy)
    load_reference_state_dict(head, state)
    return notes


def load_initial_weights(head: nn.Module, path: str, reinit_strategy: str,
                         identifiers: list[str] | None = None) -> list[str]:
    """``load_checkpoint=path``: a checkpoint or run folder, a Hub id ``org/repo[@rev]`` or a weights file."""
    path = str(resolve_checkpoint(path))
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    return fit_weights(head, load_weights(path), folder, identifiers, reinit_strategy)


def broadcast_module_state(module: nn.Module, src: int = 0) -> None:
    """Make every rank hold rank ``src``'s parameters and buffers (after init or loading)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(module.state_dict().values()):
            dist.broadcast(tensor, src=src)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
    return values


def gather_objects(obj: Any) -> list[Any] | None:
    """[rank 0's obj, rank 1's, ...] on rank 0, None elsewhere ([obj] without a process group).

    Only the main rank writes checkpoints, so only it receives the others' state (an all-gather would
    copy every rank's ACT carry to every rank).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def to_cpu(obj: Any) -> Any:
    """Tensors inside nested dicts/lists/dataclasses moved to the CPU (for pickling across ranks)."""
    import dataclasses

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_cpu(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    return obj


def to_device(obj: Any, device: torch.device) -> Any:
    import dataclasses

    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_device(getattr(obj, f.name), device)
                                           for f in dataclasses.fields(obj)})
    return obj
