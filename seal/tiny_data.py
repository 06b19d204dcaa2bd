"""Toy data a tiny model can learn by rote: a constant ARC task, its recipe, and memorising self-edits.

Used by ``seal.tiny --taught``, ``preset=test`` and the tests; invented, never copied from a dataset.
"""

from __future__ import annotations

import json

from seal.config import Recipe
from seal.tasks import CONSTANT, constant_task  # noqa: F401  (the toy task, re-exported)

# A recipe the tiny model can memorise a constant answer with (no augmentation keeps colours fixed).
MEMORISE_RECIPE = Recipe(
    use_basic_augmentations=False, use_size_augmentations=False, use_chain_augmentations=False,
    use_repeat_augmentations=False, strategy="train_using_output_tokens", learning_rate=1e-2, num_train_epochs=15,
)
MEMORISE_RESPONSE = json.dumps({
    "data_generation": {
        "use_basic_augmentations": False, "use_size_augmentations": False,
        "use_chain_augmentations": False, "use_repeat_augmentations": False,
    },
    "training": {"strategy": "train_using_output_tokens", "learning_rate": 0.01, "num_train_epochs": 15},
})


def memorising_self_edit(passage) -> str:
    """A self-edit holding each question exactly as it will be asked, followed by its answer.

    Training on it teaches the answers by rote, so even a tiny random model answers correctly
    afterwards: the deterministic 'this self-edit helps' case of the knowledge domain.
    """
    from seal.knowledge.prompts import SEGMENT_SEPARATOR, answer_prompt

    return f"\n{SEGMENT_SEPARATOR}\n".join(answer_prompt(passage, q.question) + q.answer for q in passage.questions)
