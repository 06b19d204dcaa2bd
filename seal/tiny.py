"""A tiny random Llama-architecture model with a locally built Llama-3-style tokenizer.

For CPU tests and the quick start; nothing is downloaded::

    python -m seal.tiny runs/tiny_llama
    python -m seal stage=loop model=local model.name_or_path=runs/tiny_llama lora=small ...
"""

from __future__ import annotations

import sys
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


if __name__ == "__main__":
    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny_llama"))
