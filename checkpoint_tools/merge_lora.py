"""Merge LoRA adapters into dense weights, giving an ordinary checkpoint any tool can load.

    python -m checkpoint_tools.merge_lora checkpoints/lora_run/step_00012500 checkpoints/merged
    python -m checkpoint_tools.merge_lora <base checkpoint> <out> --adapters adapters.safetensors

The first form merges the adapters stored inside a LoRA run's checkpoint (keys ``*.lora_A``,
``*.lora_B``, ``*.lora_scale``); the second applies a separately saved adapter file
(models.lora.save_lora_adapters) to a base checkpoint. The config is rewritten with LoRA off,
identifiers/metrics are copied; train_state.* is not (it holds adapter optimizer state).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from models.lora import is_lora_key, merge_lora_state_dict


def _disable_lora_in_config(text: str) -> str:
    config = yaml.safe_load(text) or {}
    if isinstance(config.get("lora"), dict):
        config["lora"]["rank"] = 0
    if isinstance(config.get("arch"), dict) and "lora_rank" in config["arch"]:
        config["arch"]["lora_rank"] = 0
    return yaml.safe_dump(config, sort_keys=False)


def merge_checkpoint(checkpoint: str | Path, out: str | Path, adapters: str | Path | None = None) -> int:
    """Write the merged checkpoint folder; return the number of merged layers."""
    from utils.io import atomic_directory
    from utils.tensor_files import read_safetensors, write_safetensors

    checkpoint = Path(checkpoint)
    extra = read_safetensors(adapters) if adapters else {}
    merged_layers = 0
    with atomic_directory(out) as tmp:
        for weights_file in ("model.safetensors", "ema.safetensors"):
            if not (checkpoint / weights_file).is_file():
                continue
            state = read_safetensors(checkpoint / weights_file)
            state.update(extra)
            merged_layers = sum(k.endswith(".lora_A") for k in state)
            merged = merge_lora_state_dict(state)
            assert not any(is_lora_key(k) for k in merged)
            write_safetensors(tmp / weights_file, merged)
        if merged_layers == 0:
            raise ValueError(f"{checkpoint}: no LoRA adapters found (nothing to merge)")
        if (checkpoint / "config.yaml").is_file():
            (tmp / "config.yaml").write_text(_disable_lora_in_config((checkpoint / "config.yaml").read_text()))
        for name in ("identifiers.json", "metrics.json", "submission.json"):
            if (checkpoint / name).is_file():
                shutil.copy2(checkpoint / name, tmp / name)
    return merged_layers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Merge LoRA adapters into dense weights")
    parser.add_argument("checkpoint", help="LoRA checkpoint folder (or base checkpoint with --adapters), or Hub id")
    parser.add_argument("out", help="output checkpoint folder")
    parser.add_argument("--adapters", default=None, help="separately saved adapter safetensors file")
    args = parser.parse_args(argv)

    from training.hub import resolve_checkpoint
    from utils.errors import exit_on_user_error

    with exit_on_user_error():  # a damaged or refused file: one line naming it, exit code 2
        n = merge_checkpoint(resolve_checkpoint(args.checkpoint), args.out, args.adapters)
    print(f"merged {n} LoRA layers into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
