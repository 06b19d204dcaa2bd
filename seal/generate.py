"""Batched generation with plain transformers (no vLLM): left padding, stop at end of turn."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Generation:
    text: str
    mean_logprob: float  # average log-probability of the generated tokens (a confidence)


def stop_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    for name in ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>"):
        if name in vocab:
            ids.add(vocab[name])
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float = 0.0,
    num_return_sequences: int = 1,
    top_p: float = 1.0,
) -> list[Generation]:
    """Generate for each prompt (``num_return_sequences`` each, in order); greedy when temperature is 0."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    use_cache, base.config.use_cache = base.config.use_cache, True
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    sampling = temperature > 0
    options = dict(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_token_ids(tokenizer),
        return_dict_in_generate=True,
        output_scores=True,
        num_return_sequences=num_return_sequences,
    )
    if sampling:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    results: list[Generation] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(**enc, **options)
            new = out.sequences[:, enc["input_ids"].shape[1] :]
            scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            for row in range(new.shape[0]):
                valid = new[row] != tokenizer.pad_token_id
                logp = scores[row][valid[: scores.shape[1]]]
                mean = float(logp.float().mean()) if logp.numel() else float("-inf")
                text = tokenizer.decode(new[row], skip_special_tokens=True)
                results.append(Generation(text, mean))
    finally:
        tokenizer.padding_side = side
        base.config.use_cache = use_cache
        model.train(was_training)
    return results
