"""One knowledge-incorporation passage on the SEAL model presets: k self-edits generated, one LoRA step.

Random weights from each architecture's published numbers (built in code: no download). Per preset:
  * generation: k=5 sampled self-edits (temperature 1.0, top-p 0.95) of ``--new-tokens`` tokens each
    after a ``--prompt-len``-token prompt, KV cache on (SEAL's self-edit step);
  * one LoRA SFT step on a ``--seq-len``-token training sequence, every token supervised (r 32,
    alpha 64 on q/v/gate/up/down, gradient checkpointing, batch 1: SEAL's inner loop).
Prints one table: peak RSS (CPU), peak GPU memory (CUDA) and tokens/s for each.

    OMP_NUM_THREADS=2 python benchmarks/bench_seal_knowledge.py                 # CPU: 0.5B and 1B, float32
    python benchmarks/bench_seal_knowledge.py --quick                            # CUDA: all three presets, bf16, ~1 min
    python benchmarks/bench_seal_knowledge.py --models qwen2_5_7b --dtype bfloat16
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seal.config import LoraSettings  # noqa: E402
from seal.model import attach_lora, choose_precision, sliced_lm_loss  # noqa: E402

GIB = 2**30


def architecture(name: str):
    """The published architecture numbers of the SEAL model presets."""
    from transformers import LlamaConfig, Qwen2Config

    if name == "llama_3_2_1b":
        return LlamaConfig(
            vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
            num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
            rms_norm_eps=1e-5, tie_word_embeddings=True,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    qwen = {
        "qwen2_5_0_5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                             num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
        "qwen2_5_7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                           num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    }
    if name not in qwen:
        raise SystemExit(f"unknown model {name!r}; valid: llama_3_2_1b, qwen2_5_0_5b, qwen2_5_7b")
    return Qwen2Config(**qwen[name], max_position_embeddings=32768, rms_norm_eps=1e-6,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})


def random_model(config, dtype: torch.dtype, device: torch.device):
    """Random weights without the slow per-module init: allocate empty, then fill in place."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model = model.to_empty(device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0.0, 0.02, generator=gen)
    model.model.rotary_emb = type(model.model.rotary_emb)(model.config).to(device)  # buffers were left empty
    if config.tie_word_embeddings:
        model.tie_weights()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak(device):
    return torch.cuda.max_memory_allocated() / GIB if device.type == "cuda" else None


def bench(name: str, dtype_name: str, device: torch.device, args) -> list[dict]:
    precision = choose_precision(dtype_name, device)
    model = random_model(architecture(name), precision.weights, device)
    vocab = model.config.vocab_size
    rows = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    prompt = torch.randint(0, vocab, (1, args.prompt_len), generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.config.use_cache = True
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0,
                             top_p=0.95, top_k=0, num_return_sequences=args.k, max_new_tokens=args.new_tokens,
                             min_new_tokens=args.new_tokens, pad_token_id=0)
    _sync(device)
    seconds = time.perf_counter() - start
    made = (out.shape[1] - args.prompt_len) * out.shape[0]
    rows.append({"case": f"{name} generate k={args.k} x {args.new_tokens} ({dtype_name})", "tokens": made,
                 "rss_peak": rss_gib(), "gpu_peak": _peak(device), "seconds": seconds, "tok_s": made / seconds})

    model.config.use_cache = False
    peft_model = attach_lora(model, LoraSettings(r=32, alpha=64), precision, gradient_checkpointing=True, seed=0)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    ids = torch.randint(0, vocab, (1, args.seq_len), generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    peft_model.train()
    times = []
    for _ in range(args.steps):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=precision.autocast, enabled=precision.autocast is not None):
            loss = sliced_lm_loss(peft_model, ids, torch.ones_like(ids), ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - start)
    step = min(times)
    rows.append({"case": f"{name} LoRA r32 step, {args.seq_len} tokens ({dtype_name})", "tokens": args.seq_len,
                 "rss_peak": rss_gib(), "gpu_peak": _peak(device), "seconds": step, "tok_s": args.seq_len / step,
                 "lora_m": sum(p.numel() for p in params) / 1e6})
    del peft_model, model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None,
                        help="llama_3_2_1b qwen2_5_0_5b qwen2_5_7b (default: all on CUDA, the small two on CPU)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 CUDA, fp32 CPU) | bfloat16 | float16 | float32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--k", type=int, default=5, help="self-edits sampled per passage")
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=512, help="one training sequence: title + self-edit")
    parser.add_argument("--steps", type=int, default=2, help="LoRA steps timed (the fastest is reported)")
    parser.add_argument("--quick", action="store_true", help="short generation and one timed step (~1 min on an H200)")
    args = parser.parse_args()
    from utils.distributed import select_device

    device = select_device(args.device)
    if args.quick:
        args.new_tokens, args.steps = min(args.new_tokens, 64), 2
    models = args.models or (["qwen2_5_0_5b", "llama_3_2_1b", "qwen2_5_7b"] if device.type == "cuda"
                             else ["qwen2_5_0_5b", "llama_3_2_1b"])
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device} ({name}, {torch.get_num_threads()} threads), torch {torch.__version__}")
    print("| case | tokens | LoRA params (M) | peak RSS (GiB) | peak GPU (GiB) | seconds | tokens/s |")
    print("|---|---|---|---|---|---|---|")

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for m in models:
        for r in bench(m, dtype, device, args):
            print(f"| {r['case']} | {r['tokens']} | {fmt(r.get('lora_m'), '.1f')} | {r['rss_peak']:.2f} "
                  f"| {fmt(r['gpu_peak'], '.2f')} | {r['seconds']:.2f} | {r['tok_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
