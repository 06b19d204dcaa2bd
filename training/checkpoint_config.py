"""The configuration a checkpoint was trained with, and the architecture a post-training run takes from it.

One mechanism for every entry point (pretrain.py with ``load_checkpoint=``, kaggle/run_kaggle.py,
evaluate.py): the checkpoint's architecture wins over the run's YAML files, because a post-training
config (cfg_pretrain_lora, cfg_emb_posttrain, cfg_kaggle_lora) inherits cfg_pretrain.yaml's ``arch``,
which need not be what the checkpoint was trained with (``arch.L_cycles=4`` in the README's
pre-training command, 6 in the YAML). Every arch field is taken except those of the post-training run
itself: the LoRA ones and ``forward_dtype`` (a hardware choice: a checkpoint trained on CPU says
float32, and a GPU run should still compute in bfloat16). H_cycles/L_cycles change no weight shape but change the function the weights
were trained for, so they are taken too.

Keys the user set on the command line still win (``cli_arch_keys`` reads them from Hydra's override
list at the entry point; code below it gets a plain set). An override that changes the weights'
names or shapes cannot load and is refused naming the field and both values; the test builds the two
models on the meta device (no memory, no time), so it is exact for every architecture.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Collection, Iterable

import torch
from omegaconf import OmegaConf

from models.config import ArchConfig
from utils.errors import UserError

# Arch fields that belong to the run, not to the trained model.
RUN_FIELDS = ("forward_dtype",)

# Sizes for the meta-device builds; any positive values give the same comparison.
_PROBE_DIMS = dict(batch_size=1, seq_len=30, vocab_size=12, num_puzzle_identifiers=3)


class ArchMismatchError(UserError):
    """A command-line arch override that the checkpoint's weights cannot load into."""


def cli_arch_keys(overrides: Iterable[str]) -> set[str]:
    """Top-level arch fields set by command-line overrides (``arch.L_cycles=4``, ``+arch.x=y``,
    ``arch.loss.loss_type=...`` -> ``loss``). ``arch=<file>`` picks a model family: it counts as setting
    ``name`` only, so ``arch=trm`` does not silently undo a checkpoint's ``L_cycles=4``."""
    keys = set()
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key == "arch":
            keys.add("name")
        elif key.startswith("arch."):
            keys.add(key[len("arch."):].split(".", 1)[0])
    return keys


# ----- reading a checkpoint's configuration ---------------------------------------------------------
def known_keys_only(raw: dict, schema: Any, where: str = "", dropped: list[str] | None = None) -> dict:
    """Drop keys a reference all_config.yaml has but our schema lacks (recorded in ``dropped``)."""
    fields = getattr(schema, "__dataclass_fields__", {})
    out = {}
    for key, value in raw.items():
        if key not in fields:
            if dropped is not None:
                dropped.append(f"{where}{key}")
            continue
        nested = getattr(schema, key)
        if isinstance(value, dict) and hasattr(nested, "__dataclass_fields__"):
            value = known_keys_only(value, nested, f"{where}{key}.", dropped)
        out[key] = value
    return out


def reference_config_dict(path: Path, dropped: list[str] | None = None) -> dict:
    """A reference (TRM/HRM) ``all_config.yaml`` as a dict our PretrainConfig schema accepts."""
    from training.config import PretrainConfig

    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if "data_path" in raw and "data_paths" not in raw:  # HRM spelling
        raw["data_paths"] = [raw.pop("data_path")]
    arch = raw.get("arch", {})
    if "hrm" in str(arch.get("name", "")).lower() and "puzzle_emb_len" not in arch:
        arch["puzzle_emb_len"] = 0  # HRM has no such knob: its prefix is ceil(ndim / hidden)
    return known_keys_only(raw, PretrainConfig(), dropped=dropped)


def config_file_of(checkpoint: Path) -> Path | None:
    """The config file beside a resolved checkpoint: our ``config.yaml`` in the folder (or in its run
    folder), or a reference weights file's ``all_config.yaml``; None when there is none."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for candidate in (folder / "config.yaml", folder / "all_config.yaml", folder.parent / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def read_checkpoint_config(checkpoint: Path, dropped: list[str] | None = None):
    """The PretrainConfig a resolved checkpoint was trained with, and the file it came from (or None)."""
    from training.config import PretrainConfig, to_pretrain_config

    file = config_file_of(checkpoint)
    if file is None:
        return None, None
    raw = reference_config_dict(file, dropped) if file.name == "all_config.yaml" else OmegaConf.load(file)
    return to_pretrain_config(OmegaConf.merge(OmegaConf.structured(PretrainConfig), raw)), file


# ----- taking the architecture ------------------------------------------------------------------------
def _weight_shapes(arch: ArchConfig) -> dict[str, tuple[int, ...]]:
    from models.registry import build_model

    with torch.device("meta"):
        head = build_model(copy.deepcopy(arch), **_PROBE_DIMS)
    return {k: tuple(v.shape) for k, v in head.state_dict().items()}


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def merge_arch(run_arch: ArchConfig, checkpoint_arch: ArchConfig, set_on_command_line: Collection[str],
               where: str) -> tuple[ArchConfig, str]:
    """The run's architecture: the checkpoint's, with the run's LoRA fields and command-line overrides.

    Returns it with a one-line description; raises ArchMismatchError for an override whose weights
    would not load, naming the field and both values.
    """
    merged = copy.deepcopy(checkpoint_arch)
    overridden, replaced = [], []
    for f in dataclasses.fields(ArchConfig):
        name, mine, theirs = f.name, getattr(run_arch, f.name), getattr(checkpoint_arch, f.name)
        own = name.startswith("lora_") or name in RUN_FIELDS
        if own or name in set_on_command_line:
            setattr(merged, name, copy.deepcopy(mine))
            if mine != theirs and not own:
                overridden.append(name)
        elif mine != theirs:
            replaced.append(f"{name} {_short(theirs)} (config said {_short(mine)})")
    if overridden:
        reference = _weight_shapes(checkpoint_arch)
        for name in overridden:
            probe = copy.deepcopy(checkpoint_arch)
            setattr(probe, name, getattr(run_arch, name))
            try:
                fits = _weight_shapes(probe) == reference
            except ValueError:  # the override alone is not a valid architecture with the checkpoint's others
                fits = False
            if not fits:
                raise ArchMismatchError(
                    f"arch.{name}={_short(getattr(run_arch, name))} cannot load {where}: it was trained with "
                    f"arch.{name}={_short(getattr(checkpoint_arch, name))} (drop the override)")
    a = merged
    summary = (f"{a.name} hidden_size={a.hidden_size} num_heads={a.num_heads} H_cycles={a.H_cycles} "
               f"L_cycles={a.L_cycles} H_layers={a.H_layers} L_layers={a.L_layers} expansion={_short(a.expansion)} "
               f"puzzle_emb_ndim={a.puzzle_emb_ndim} pos_encodings={a.pos_encodings} mlp_t={a.mlp_t}")
    text = f"architecture from {where}: {summary}"
    if overridden:
        text += "; command line: " + ", ".join(
            f"{n}={_short(getattr(merged, n))} (checkpoint {_short(getattr(checkpoint_arch, n))})" for n in overridden)
    if replaced:
        text += "; instead of the config's: " + ", ".join(replaced)
    return merged, text


def arch_for_post_training(run_arch: ArchConfig, load_checkpoint: str,
                           set_on_command_line: Collection[str]) -> tuple[ArchConfig, str]:
    """``load_checkpoint=`` (a checkpoint or run folder, a Hub id, a reference weights file with
    all_config.yaml beside it): the architecture to build, and a line saying where it came from."""
    from training.hub import resolve_checkpoint

    checkpoint = resolve_checkpoint(load_checkpoint)
    cfg, file = read_checkpoint_config(checkpoint)
    if cfg is None:
        return run_arch, (f"architecture from the run's config ({run_arch.name}, hidden_size={run_arch.hidden_size}): "
                          f"{load_checkpoint} has no config.yaml / all_config.yaml beside it")
    return merge_arch(run_arch, cfg.arch, set_on_command_line, str(file))
