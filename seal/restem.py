"""ReSTEM step: supervised fine-tuning on the self-edits that earned reward 1, merged into a new base.

Each pair is (self-edit prompt, the model's own response); only the response is supervised. The
LoRA is merged into the weights and the result saved as an ordinary model folder (with its
tokenizer) that the next round loads like any other model.
"""

from __future__ import annotations

from pathlib import Path

from seal.model import attach_lora
from seal.text_format import encode_pair, prompt_and_completion
from seal.train import TrainStats, train_supervised
from seal.ttt_data import TrainExample
from utils.io import atomic_directory


def restem_examples(tokenizer, pairs: list[tuple[list[dict] | str, str]], date_string: str) -> list[TrainExample]:
    """Tokenize (prompt, response) pairs; only the response (and its end marker) is supervised.

    A prompt is chat messages (rendered by the tokenizer's template, which holds BOS) or plain
    text (BOS prepended when the tokenizer has one, the response closed by EOS), as each domain
    prompts its model.
    """
    out = []
    for messages, response in pairs:
        if isinstance(messages, str):
            prompt, completion = (tokenizer.bos_token or "") + messages, response + tokenizer.eos_token
        else:
            prompt, completion = prompt_and_completion(
                tokenizer, messages, {"role": "assistant", "content": response}, date_string
            )
        ids, labels = encode_pair(tokenizer, prompt, completion, all_tokens=False)
        out.append(TrainExample(ids, labels))
    return out


def restem_update(model, tokenizer, precision, pairs, cfg, out_dir: Path, seed: int) -> TrainStats:
    """Fine-tune ``model`` on ``pairs``, merge the LoRA, save to ``out_dir``; returns training stats.

    ``cfg`` is the whole SealConfig (restem settings, date string, gradient checkpointing).
    ``model`` is consumed: the LoRA is merged into its weights.
    """
    examples = restem_examples(tokenizer, pairs, cfg.model.date_string)
    peft_model = attach_lora(model, cfg.restem.lora, precision, cfg.model.gradient_checkpointing, seed)
    stats = train_supervised(
        peft_model,
        examples,
        learning_rate=cfg.restem.learning_rate,
        epochs=cfg.restem.num_train_epochs,
        batch_size=cfg.restem.batch_size,
        warmup_steps=cfg.restem.warmup_steps,
        pad_id=tokenizer.pad_token_id,
        precision=precision,
        seed=seed,
    )
    merged = peft_model.merge_and_unload()
    if cfg.model.gradient_checkpointing:
        disable = getattr(merged, "activation_checkpointing_disable", None) or merged.gradient_checkpointing_disable
        disable()
    merged.config.use_cache = True
    with atomic_directory(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return stats
