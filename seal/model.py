"""Loading the causal LM and its tokenizer, precision choice, LoRA set-up and the sliced-logits loss."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from utils.distributed import select_device


@dataclass(frozen=True)
class Precision:
    """Weights' dtype, autocast dtype (or None) and whether LoRA weights must stay fp32."""

    weights: torch.dtype
    autocast: Optional[torch.dtype]
    fp32_adapters: bool

    @property
    def needs_grad_scaler(self) -> bool:
        return self.autocast == torch.float16


def choose_precision(dtype: str, device: torch.device) -> Precision:
    """bf16 on GPUs that have it, fp16 weights + fp32 adapters on older GPUs (T4), fp32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            # Native bf16 only: with emulation counted, a T4 "supports" bf16 and never got the fp16 path.
            dtype = "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"
        else:
            dtype = "float32"
    table = {
        "bfloat16": Precision(torch.bfloat16, None, False),
        "float16": Precision(torch.float16, torch.float16, True),
        "float32": Precision(torch.float32, None, False),
    }
    if dtype not in table:
        raise ValueError(f"model.dtype must be auto or one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        # Llama 3 ships a reserved padding token; fall back to EOS (padding is never supervised).
        pad = "<|finetune_right_pad_id|>"
        tok.pad_token = pad if pad in tok.get_vocab() else tok.eos_token
    return tok


def load_model(model_cfg, device: Optional[torch.device] = None, name_or_path: Optional[str] = None):
    """The causal LM on ``device`` with the configured precision (and quantization when asked)."""
    from transformers import AutoModelForCausalLM

    device = device or select_device(model_cfg.device)
    precision = choose_precision(model_cfg.dtype, device)
    kwargs = {"dtype": precision.weights}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.quantization:
        kwargs["quantization_config"] = _bitsandbytes_config(model_cfg.quantization, precision)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(name_or_path or model_cfg.name_or_path, **kwargs)
    if not model_cfg.quantization:
        model.to(device)
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    return model, precision


def _bitsandbytes_config(mode: str, precision: Precision):
    try:
        import bitsandbytes  # noqa: F401  (optional extra: pip install ".[gpu]")
    except ImportError as exc:
        raise ImportError("model.quantization needs bitsandbytes (pip install bitsandbytes)") from exc
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if mode == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=precision.autocast or precision.weights
        )
    raise ValueError(f"model.quantization must be null, 8bit or 4bit, got {mode!r}")


def lora_config(lora_cfg):
    from peft import LoraConfig

    return LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=list(lora_cfg.target_modules),
    )


def attach_lora(model, lora_cfg, precision: Precision, gradient_checkpointing: bool, seed: int):
    """Wrap ``model`` with a freshly initialised LoRA adapter ready to train."""
    from peft import get_peft_model

    torch.manual_seed(seed)  # LoRA A matrices are random: same seed, same adapter
    if gradient_checkpointing:
        # transformers 5 renamed the method (and its kwargs); keep working on 4.x too.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with quiet_peft():
        peft_model = get_peft_model(model, lora_config(lora_cfg))
    if precision.fp32_adapters:
        for p in peft_model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    return peft_model


@contextlib.contextmanager
def quiet_peft():
    """Silence the one deprecation peft triggers on transformers 5 when wrapping a model.

    peft reads ``model.is_gradient_checkpointing`` (renamed ``is_activation_checkpointing``);
    the warning is about peft's code, not ours, and would fire once per adapter.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def sliced_lm_loss(model, input_ids, attention_mask, labels) -> torch.Tensor:
    """Mean next-token cross-entropy over supervised positions only.

    The decoder's hidden states are computed for the whole sequence, but the vocabulary
    projection is applied only where a label exists: with a 128k vocabulary the full logits
    tensor would dominate memory at long sequence lengths.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    if not keep.any():
        return hidden.sum() * 0.0
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])
