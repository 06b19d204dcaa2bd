"""Self-edits: the model reads a task's demonstrations and proposes a training recipe as JSON.

A response becomes a ``Recipe`` only when it is a JSON object with every field of the schema,
of the right type and in range; anything else is kept with ``recipe=None`` and the reason, and
later earns reward 0. Nothing here raises on a model's output.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import torch

from seal.config import Recipe
from seal.generate import generate
from seal.tasks import ArcTask
from seal.text_format import chat_prompt

SYSTEM_MESSAGE = "You are a helpful assistant. Give the requested output directly, with no commentary."
RECIPE_INSTRUCTIONS = """Choose how a model should be trained on the examples above, using only the tools listed here.

1. Data generation. Set each of these to true or false:
    - use_basic_augmentations (rotations, flips, reflections, translation, transpose)
    - use_size_augmentations (cells repeated to double the height, the width, or both)
    - use_chain_augmentations (a rotation, flip or transpose followed by doubled resolution)
    - use_repeat_augmentations (the grid tiled twice vertically, horizontally, or both)

2. Training. Pick a strategy, either "train_using_all_tokens" or "train_using_output_tokens",
   and give a learning_rate (a float) and num_train_epochs (an integer).

Reply with one JSON object and nothing else (no markdown, lowercase true/false), shaped like:

{
  "data_generation": {
    "use_basic_augmentations": ...,
    "use_size_augmentations": ...,
    "use_chain_augmentations": ...,
    "use_repeat_augmentations": ...
  },
  "training": {
    "strategy": ...,
    "learning_rate": ...,
    "num_train_epochs": ...
  }
}
"""

DATA_KEYS = ("use_basic_augmentations", "use_size_augmentations", "use_chain_augmentations", "use_repeat_augmentations")
STRATEGIES = ("train_using_all_tokens", "train_using_output_tokens")


def _rows(grid: np.ndarray) -> str:
    return "".join(" ".join(str(int(v)) for v in row) + "\n" for row in grid)


def self_edit_messages(task: ArcTask) -> list[dict[str, str]]:
    shown = "".join(f"Input:\n{_rows(i)}\nOutput:\n{_rows(o)}\n" for i, o in task.demos)
    return [
        {"role": "system", "content": SYSTEM_MESSAGE},
        {"role": "user", "content": shown + "------\n\n" + RECIPE_INSTRUCTIONS},
    ]


def self_edit_prompt(tokenizer, task: ArcTask, date_string: str) -> str:
    return chat_prompt(tokenizer, self_edit_messages(task), date_string)


@dataclass
class ParsedRecipe:
    recipe: Optional[Recipe]
    reason: Optional[str] = None  # why the response is not a usable recipe


def _first_json_object(text: str) -> Optional[Any]:
    """Decode the first JSON object in ``text`` (models sometimes add a fence or a sentence)."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            return decoder.raw_decode(text, start)[0]
        except json.JSONDecodeError:
            continue
    return None


def parse_recipe(text: str, limits) -> ParsedRecipe:
    """Validate a response against the recipe schema and ``limits`` (a SelfEditConfig)."""
    obj = _first_json_object(text)
    if obj is None:
        return ParsedRecipe(None, "malformed: no JSON object in the response")
    if not isinstance(obj, dict):
        return ParsedRecipe(None, "malformed: response is not a JSON object")
    data, training = obj.get("data_generation"), obj.get("training")
    if not isinstance(data, dict) or not isinstance(training, dict):
        return ParsedRecipe(None, "incomplete: needs 'data_generation' and 'training' objects")
    missing = [k for k in DATA_KEYS if k not in data] + [
        k for k in ("strategy", "learning_rate", "num_train_epochs") if k not in training
    ]
    if missing:
        return ParsedRecipe(None, f"incomplete: missing {', '.join(missing)}")
    bad_flags = [k for k in DATA_KEYS if not isinstance(data[k], bool)]
    if bad_flags:
        return ParsedRecipe(None, f"malformed: {', '.join(bad_flags)} must be true or false")
    strategy, lr, epochs = training["strategy"], training["learning_rate"], training["num_train_epochs"]
    if strategy not in STRATEGIES:
        return ParsedRecipe(None, f"out of range: strategy {strategy!r} is not one of {list(STRATEGIES)}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        return ParsedRecipe(None, f"malformed: learning_rate {lr!r} is not a number")
    if not (limits.min_learning_rate <= lr <= limits.max_learning_rate):
        return ParsedRecipe(
            None, f"out of range: learning_rate {lr} outside [{limits.min_learning_rate}, {limits.max_learning_rate}]"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        return ParsedRecipe(None, f"malformed: num_train_epochs {epochs!r} is not an integer")
    if not (1 <= epochs <= limits.max_epochs):
        return ParsedRecipe(None, f"out of range: num_train_epochs {epochs} outside [1, {limits.max_epochs}]")
    return ParsedRecipe(Recipe(**{k: data[k] for k in DATA_KEYS}, strategy=strategy,
                               learning_rate=float(lr), num_train_epochs=epochs))


def task_seed(seed: int, task_id: str) -> int:
    """A per-task seed that does not depend on Python's hash randomisation."""
    return (seed * 1_000_003 + zlib.crc32(task_id.encode())) % (2**31)


def propose_recipes(model, tokenizer, task: ArcTask, cfg, date_string: str, seed: int) -> list[dict]:
    """k recipe slots for ``task``; each slot retries up to ``max_attempts`` samples.

    Returns one record per slot: prompt, response, recipe (dict or None), reason, attempts.
    """
    prompt = self_edit_prompt(tokenizer, task, date_string)
    torch.manual_seed(task_seed(seed, task.task_id))
    slots: list[Optional[dict]] = [None] * cfg.num_recipes
    last: list[Optional[dict]] = [None] * cfg.num_recipes
    for attempt in range(1, cfg.max_attempts + 1):
        open_slots = [k for k, s in enumerate(slots) if s is None]
        if not open_slots:
            break
        outs = generate(model, tokenizer, [prompt], max_new_tokens=cfg.max_new_tokens, batch_size=1,
                        temperature=cfg.temperature, num_return_sequences=len(open_slots))
        for k, out in zip(open_slots, outs):
            parsed = parse_recipe(out.text, cfg)
            record = {"prompt": prompt, "response": out.text, "attempts": attempt,
                      "recipe": asdict(parsed.recipe) if parsed.recipe else None, "reason": parsed.reason}
            last[k] = record
            if parsed.recipe is not None:
                slots[k] = record
    return [s if s is not None else last[k] for k, s in enumerate(slots)]
