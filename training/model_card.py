"""The README.md (model card) pushed with a checkpoint: what the model is, what it was trained on,
how well it did and the command that reproduces the run, all read from the checkpoint folder
(config.yaml, metrics.json, identifiers.json, model.safetensors' header)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# Config keys echoed in the reproduce command when the run did not record its own command line.
_COMMAND_KEYS = (
    "data_paths", "data_paths_test", "global_batch_size", "epochs", "eval_interval", "lr", "lr_warmup_steps",
    "weight_decay", "puzzle_emb_lr", "puzzle_emb_weight_decay", "ema", "freeze_weights", "seed",
)
_ARCH_KEYS = ("name", "H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "num_heads",
              "expansion", "puzzle_emb_ndim", "puzzle_emb_len", "pos_encodings", "halt_max_steps", "mlp_t",
              "lora_rank", "lora_alpha")
_PRETRAIN_ARCH_NAMES = {"trm": "TRM (Tiny Recursive Model)", "hrm": "HRM (Hierarchical Reasoning Model)",
                        "transformers_baseline": "Transformer baseline"}


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def tensor_shapes(safetensors_path: Path) -> dict[str, tuple[list[int], str]]:
    """Name -> (shape, dtype) from the safetensors header, without reading the tensors."""
    with open(safetensors_path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    return {k: (v["shape"], v["dtype"]) for k, v in header.items() if k != "__metadata__"}


def count_parameters(folder: Path) -> tuple[int, int]:
    """(dense parameters, puzzle-embedding table entries) of a checkpoint's model.safetensors."""
    path = folder / "model.safetensors"
    if not path.is_file():
        return 0, 0
    dense = table = 0
    for name, (shape, _) in tensor_shapes(path).items():
        n = 1
        for s in shape:
            n *= s
        if name.endswith("puzzle_emb.weights"):
            table += n
        elif "rotary" in name or name.endswith(("H_init", "L_init", "lora_scale", "inv_freq")):
            continue  # fixed buffers, not learned weights
        else:
            dense += n
    return dense, table


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def reproduce_command(config: dict[str, Any]) -> str:
    """The recorded command if the run saved one, else one rebuilt from the resolved config."""
    recorded = config.get("command")
    if isinstance(recorded, str) and recorded.strip():
        return recorded.strip()
    arch = config.get("arch") or {}
    parts = ["torchrun --nproc-per-node <GPUS> pretrain.py"]
    if arch.get("name"):
        parts.append(f"arch={arch['name']}")
    for key in _ARCH_KEYS[1:]:
        if key in arch and not (key.startswith("lora_") and not arch.get("lora_rank")):
            parts.append(f"arch.{key}={_fmt(arch[key])}")
    for key in _COMMAND_KEYS:
        if key in config and config[key] is not None:
            value = _fmt(config[key])
            parts.append(f'{key}="{value}"' if isinstance(config[key], (list, tuple)) else f"{key}={value}")
    if config.get("load_checkpoint"):
        parts.append(f"+load_checkpoint={config['load_checkpoint']}")
    return " \\\n  ".join(parts)


def _metrics_table(metrics: Any) -> str:
    rows = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append(f"| {prefix} | {value:.4g} |")

    walk("", metrics)
    if not rows:
        return "No evaluation was recorded with this checkpoint.\n"
    return "| metric | value |\n| --- | ---: |\n" + "\n".join(rows) + "\n"


def build_model_card(folder: str | Path, repo_id: str) -> str:
    folder = Path(folder)
    config = _load_yaml(folder / "config.yaml")
    metrics = _load_json(folder / "metrics.json")
    identifiers = _load_json(folder / "identifiers.json") or []
    arch = config.get("arch") or {}
    arch_name = str(arch.get("name", "unknown"))
    dense, table = count_parameters(folder)
    emb_dim = arch.get("puzzle_emb_ndim") or 0

    front = {"library_name": "arc-reasoning", "tags": ["arc-agi", "recursive-reasoning", arch_name],
             "pipeline_tag": "other"}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {repo_id.split('/')[-1]}", "",
             f"A {_PRETRAIN_ARCH_NAMES.get(arch_name, arch_name)} checkpoint (`{folder.name}`) trained on ARC-AGI "
             "style grid puzzles with this framework.", "", "## Architecture", ""]
    arch_rows = [f"| {k} | {_fmt(arch[k])} |" for k in _ARCH_KEYS
                 if k in arch and not (k.startswith("lora_") and not arch.get("lora_rank"))]
    if arch_rows:
        lines += ["| setting | value |", "| --- | --- |", *arch_rows, ""]
    lines.append(f"- dense parameters: {dense:,}")
    if table:
        rows = table // emb_dim if emb_dim else len(identifiers)
        lines.append(f"- puzzle-embedding table: {table:,} entries ({rows:,} identifiers x {emb_dim or '?'})")
    lines += ["", "## Data", ""]
    data_paths = config.get("data_paths") or []
    lines.append(f"- training data: {', '.join(map(str, data_paths)) or 'unknown'}")
    if config.get("data_paths_test"):
        lines.append(f"- evaluation data: {', '.join(map(str, config['data_paths_test']))}")
    lines.append(f"- puzzle identifiers: {len(identifiers):,} (see identifiers.json; the embedding table row i "
                 "belongs to identifier i)")
    lines += ["", "## Metrics", "", _metrics_table(metrics), "## Reproduce", "", "```bash",
              reproduce_command(config), "```", "", "## Use", "",
              "Any tool of the framework that takes a checkpoint folder also takes this repo id "
              "(downloaded once into the Hugging Face cache; `HF_HUB_OFFLINE=1` reads only the cache):", "",
              "```bash",
              f"torchrun --nproc-per-node <GPUS> pretrain.py --config-name cfg_pretrain_lora load_checkpoint={repo_id}",
              f"python -m checkpoint_tools.export {repo_id} exports/small --keep none   # 16-bit weights, no puzzle table",
              "```", "",
              "The puzzle-embedding table has one row per identifier in identifiers.json; a dataset built "
              "from other tasks gets its rows matched by name (`python -m checkpoint_tools.embedding_growth`).", ""]
    return "\n".join(lines)
