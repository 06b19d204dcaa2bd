"""A tiny random Llama-architecture model with a locally built Llama-3-style tokenizer.

For CPU tests and the quick start; nothing is downloaded::

    python -m seal.tiny runs/tiny_llama                 # random weights
    python -m seal.tiny runs/tiny_arc --taught arc      # taught to write a recipe that solves a constant task
    python -m seal stage=loop model=local model.name_or_path=runs/tiny_llama lora=small ...

A *taught* model has been fine-tuned (a ReSTEM step) to write, for its domain's toy data, a self-edit
that works: the quick start then reaches ReSTEM with rewarded self-edits instead of all zeros.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|finetune_right_pad_id|>",
]
# Llama-3.x-style template: the system turn prints a date, which callers pin via date_string.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if date_string is not defined %}{% set date_string = '26 Jul 2024' %}{% endif %}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if loop.first and message['role'] == 'system' %}Today Date: {{ date_string }}\n\n{% endif %}"
    "{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _corpus() -> list[str]:
    from seal.self_edit import RECIPE_INSTRUCTIONS, SYSTEM_MESSAGE
    from seal.text_format import INSTRUCTION

    grids = ["[[0 1 2 3 4]\n [5 6 7 8 9]] -> [[9 8]\n [7 6]]#\n" * 4, "0 1 2 3 4 5 6 7 8 9\n" * 4]
    keys = ["data_generation", "use_basic_augmentations", "use_size_augmentations", "use_chain_augmentations",
            "use_repeat_augmentations", "training", "strategy", "train_using_output_tokens",
            "train_using_all_tokens", "learning_rate", "num_train_epochs"]
    # Repeated so BPE learns whole recipe keys: a recipe is then short enough for a tiny model to learn.
    recipe = " ".join(f'{{"{k}": true, "{k}":false, ' for k in keys) + "0.0001 0.01 0.001"
    return [INSTRUCTION, RECIPE_INSTRUCTIONS, SYSTEM_MESSAGE, "Today Date: 26 Jul 2024 Input: Output:",
            *[recipe] * 20, *grids]


def build_tokenizer(vocab_size: int = 768):
    """A byte-level BPE tokenizer with Llama-3 special tokens and a dated chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>", chat_template=CHAT_TEMPLATE,
    )


def build_tiny_model(out_dir: str | Path, seed: int = 0, hidden_size: int = 64, layers: int = 2):
    """Write a random tiny LlamaForCausalLM plus tokenizer to ``out_dir``; returns the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=8192, tie_word_embeddings=True,
        initializer_range=0.1,  # larger than the default so a rank-8 LoRA can sharpen the logits
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def teaching_pairs(domain: str, passages_file: str | None = None) -> list[tuple]:
    """(self-edit prompt, a self-edit that works) for the domain's toy data."""
    if domain == "arc":
        from seal.self_edit import self_edit_messages
        from seal.tiny_data import MEMORISE_RESPONSE, constant_task

        return [(self_edit_messages(constant_task()), MEMORISE_RESPONSE)]
    if domain == "knowledge":
        from seal.knowledge.data import load_file, sample_passages
        from seal.knowledge.prompts import self_edit_prompt
        from seal.tiny_data import memorising_self_edit

        return [(self_edit_prompt("implications", p), memorising_self_edit(p))
                for p in load_file(sample_passages(passages_file))]
    raise ValueError(f"--taught must be arc or knowledge, got {domain!r}")


def build_taught_model(out_dir: str | Path, domain: str, passages_file: str | None = None, seed: int = 0) -> Path:
    """A tiny model (random, then one ReSTEM step on ``teaching_pairs``) saved to ``out_dir``."""
    import tempfile

    import torch

    from seal.config import LoraSettings, ModelConfig, RestemConfig, SealConfig
    from seal.model import load_model, load_tokenizer
    from seal.restem import restem_update

    cfg = SealConfig(model=ModelConfig(device="cpu", dtype="float32"),
                     restem=RestemConfig(lora=LoraSettings(r=16, alpha=32), num_train_epochs=30,
                                         learning_rate=1e-2, batch_size=1))
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_model(tmp, seed=seed)
        tokenizer = load_tokenizer(tmp)
        model, precision = load_model(cfg.model, torch.device("cpu"), name_or_path=tmp)
        restem_update(model, tokenizer, precision, teaching_pairs(domain, passages_file), cfg, Path(out_dir), seed)
    return Path(out_dir)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a tiny local Llama model (and tokenizer) for CPU runs.")
    parser.add_argument("out_dir", nargs="?", default="runs/tiny_llama")
    parser.add_argument("--taught", choices=["arc", "knowledge"], default=None,
                        help="also teach it to write a working self-edit for that domain's toy data")
    args = parser.parse_args()
    print(build_taught_model(args.out_dir, args.taught) if args.taught else build_tiny_model(args.out_dir))
