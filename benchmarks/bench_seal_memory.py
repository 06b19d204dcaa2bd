"""Memory and speed of one SEAL TTT step on the Llama-3.2-1B architecture (random weights, no download).

One training step at ``--seq-len`` tokens with the default LoRA (r 128, alpha 16, q/v/gate/up/down),
gradient checkpointing and logits computed only over the supervised span, exactly as
``seal/train.py`` does it. Prints one table: peak RSS (CPU), peak GPU memory and tokens/s (CUDA).
Optionally (``--tiny-loop``) also times the whole ``loop`` stage with a tiny model on CPU.

    OMP_NUM_THREADS=2 python benchmarks/bench_seal_memory.py            # CPU, float32
    python benchmarks/bench_seal_memory.py --dtype bfloat16             # CUDA default is bfloat16
    python benchmarks/bench_seal_memory.py --tiny-loop
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seal.config import LoraSettings  # noqa: E402
from seal.model import attach_lora, choose_precision, sliced_lm_loss  # noqa: E402

GIB = 2**30


def llama_3_2_1b_config():
    """The published Llama-3.2-1B architecture numbers."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    )


def random_model(dtype: torch.dtype, device: torch.device):
    """Random weights without the slow per-module init: allocate empty, then fill in place."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_3_2_1b_config())
    model = model.to_empty(device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    # The rotary buffers are not parameters: rebuild them (to_empty left them uninitialised).
    model.model.rotary_emb = type(model.model.rotary_emb)(model.config).to(device)
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def ttt_step(dtype_name: str, seq_len: int, answer_len: int, steps: int, device: torch.device) -> dict:
    precision = choose_precision(dtype_name, device)
    model = random_model(precision.weights, device)
    loaded = rss_gib()
    peft_model = attach_lora(model, LoraSettings(), precision, gradient_checkpointing=True, seed=0)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, 128000, (1, seq_len), device=device)
    labels = torch.full_like(ids, -100)
    labels[:, -answer_len:] = ids[:, -answer_len:]  # SEAL supervises only the answer grid
    mask = torch.ones_like(ids)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    peft_model.train()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=precision.autocast, enabled=precision.autocast is not None):
            loss = sliced_lm_loss(peft_model, ids, mask, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = min(times)
    return {
        "case": f"1B TTT step ({dtype_name}, LoRA r128, ckpt, sliced logits)",
        "tokens": seq_len,
        "rss_load": loaded,
        "rss_peak": rss_gib(),
        "gpu_peak": torch.cuda.max_memory_allocated() / GIB if device.type == "cuda" else None,
        "seconds": step_s,
        "tok_s": seq_len / step_s,
        "lora_params_m": sum(p.numel() for p in params) / 1e6,
    }


def tiny_loop() -> dict:
    from seal.config import (DataConfig, EvalConfig, ModelConfig, SealConfig, SelfEditConfig, StageConfig,
                             TTTConfig)
    from seal.stages import run_stage
    from seal.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model_dir = build_tiny_model(Path(tmp) / "model")
        cfg = SealConfig(
            run_dir=str(Path(tmp) / "run"), stage=StageConfig(name="loop", rounds=2),
            model=ModelConfig(name_or_path=str(model_dir), device="cpu"), lora=LoraSettings(r=8),
            ttt=TTTConfig(max_examples=8, max_tokens=4096),
            self_edit=SelfEditConfig(num_recipes=2, max_attempts=2),
            evaluate=EvalConfig(max_new_tokens=48), data=DataConfig(preset="seal_training"),
        )
        run_stage(cfg)
        seconds = time.perf_counter() - start
    return {"case": "tiny loop: 2 rounds x 12 SEAL tasks, k=2 (CPU)", "tokens": None, "rss_load": None,
            "rss_peak": rss_gib(), "gpu_peak": None, "seconds": seconds, "tok_s": None, "lora_params_m": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--answer-len", type=int, default=256, help="supervised tokens at the end")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny-loop", action="store_true", help="also time the whole loop with a tiny model")
    parser.add_argument("--skip-1b", action="store_true")
    args = parser.parse_args()
    from utils.distributed import select_device

    device = select_device(args.device)
    rows = []
    if not args.skip_1b:
        dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
        rows.append(ttt_step(dtype, args.seq_len, args.answer_len, args.steps, device))
    if args.tiny_loop:
        rows.append(tiny_loop())

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print("| case | tokens | LoRA params (M) | RSS after load (GiB) | peak RSS (GiB) | peak GPU (GiB) | step / run (s) | tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {fmt(r['tokens'], 'd')} | {fmt(r['lora_params_m'], '.1f')} | {fmt(r['rss_load'], '.2f')} "
              f"| {fmt(r['rss_peak'], '.2f')} | {fmt(r['gpu_peak'], '.2f')} | {fmt(r['seconds'], '.1f')} | {fmt(r['tok_s'], '.1f')} |")


if __name__ == "__main__":
    main()
