"""Read and write state dicts in the reference (TinyRecursiveModels / HRM) format.

Our parameter and buffer names are the reference's, so the mapping is the identity except for
prefixes: reference checkpoints are the state dict of a torch.compile'd ACTLossHead
(``_orig_mod.model.inner.L_level...``), or of the plain head (``model.inner...``). Both load into
either our ACTLossHead (keys ``model.inner...``) or the bare ACT model (keys ``inner...``).
"""

from __future__ import annotations

from typing import Dict, Mapping

import torch
from torch import nn

_COMPILE_PREFIX = "_orig_mod."
_HEAD_PREFIX = "model."
_REFERENCE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _is_lora_key(key: str) -> bool:
    return ".lora_" in key or key.startswith("lora_")


def load_reference_state_dict(head_or_model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a reference-format state dict into an ACTLossHead or a bare ACT model, in place.

    Strips ``_orig_mod.`` (torch.compile), adds or drops the head's ``model.`` prefix as needed,
    then checks that the key sets and every shape agree before loading (values are cast to our
    dtypes, e.g. the reference's bf16 H_init into our fp32 buffer). LoRA adapter keys may be
    missing (a dense checkpoint into an adapted model). Raises ValueError explaining mismatches.
    """
    own = head_or_model.state_dict()
    target_has_head = any(k.startswith(_HEAD_PREFIX) for k in own)
    cleaned: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.replace(_COMPILE_PREFIX, "")
        has_head = key.startswith(_HEAD_PREFIX)
        if target_has_head and not has_head:
            key = _HEAD_PREFIX + key
        elif has_head and not target_has_head:
            key = key[len(_HEAD_PREFIX):]
        cleaned[key] = value

    missing = sorted(k for k in own if k not in cleaned and not _is_lora_key(k))
    unexpected = sorted(k for k in cleaned if k not in own)
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}"
                        " (a different architecture or config?)")
    for key in sorted(set(own) & set(cleaned)):
        want, got = tuple(own[key].shape), tuple(cleaned[key].shape)
        if want == got:
            continue
        if key.endswith("puzzle_emb.weights"):
            problems.append(
                f"{key}: checkpoint has {got[0]} puzzle identifiers x {got[1]} but the model was built for "
                f"{want[0]} x {want[1]}. The puzzle table has one row per identifier of the dataset the "
                "checkpoint was trained on: build the model with that dataset's num_puzzle_identifiers "
                "(was the dataset regenerated, or a different one used?)")
        else:
            problems.append(f"{key}: checkpoint shape {got} != model shape {want}")
    if problems:
        raise ValueError("cannot load reference state dict:\n  " + "\n  ".join(problems))
    head_or_model.load_state_dict(cleaned, strict=False)


def export_reference_state_dict(head_or_model: nn.Module, compiled_prefix: bool = False) -> Dict[str, torch.Tensor]:
    """State dict in the reference's layout: head-level keys (``model.inner...``; a bare model gets
    the ``model.`` prefix added), CPU tensors, the H_init/L_init buffers in the model's
    forward_dtype as the reference stores them, and ``_orig_mod.`` in front when ``compiled_prefix``."""
    state = head_or_model.state_dict()
    has_head = any(k.startswith(_HEAD_PREFIX) for k in state)
    model = head_or_model.model if hasattr(head_or_model, "model") and has_head else head_or_model
    arch = getattr(model, "arch", None)
    init_dtype = _REFERENCE_DTYPES.get(getattr(arch, "forward_dtype", "float32"), torch.float32)
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key if has_head else _HEAD_PREFIX + key
        value = value.detach().to("cpu")
        if key.endswith(("H_init", "L_init")):
            value = value.to(init_dtype)
        out[(_COMPILE_PREFIX if compiled_prefix else "") + key] = value.contiguous()
    return out
