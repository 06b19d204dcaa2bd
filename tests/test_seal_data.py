"""SEAL text format, augmentations, TTT data, recipes and task presets (no model runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seal.augment import (
    Geometric, augmenters_for, basic_augmenters, chain_augmenters, repeat_augmenters, size_augmenters,
)
from seal.config import DataConfig, Recipe, SelfEditConfig, TTTConfig
from seal.self_edit import parse_recipe
from seal.tasks import load_tasks
from seal.text_format import (
    answer_message, encode_pair, grid_to_text, parse_grid, prompt_and_completion, query_messages,
)
from seal.train import collate
from seal.ttt_data import TrainExample, augmented_pseudo_tasks, build_ttt_examples, leave_out_tasks
from tests.seal_fixtures import constant_task, tiny_model_dir  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):  # noqa: F811
    from seal.model import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def test_grid_text_matches_numpy_and_round_trips():
    grid = np.array([[3, 3, 8], [3, 7, 0], [5, 0, 0]])
    assert grid_to_text(grid) == str(grid) == "[[3 3 8]\n [3 7 0]\n [5 0 0]]"
    wide = np.arange(30 * 30).reshape(30, 30) % 10  # numpy would wrap this; the format never does
    assert parse_grid(grid_to_text(wide) + "#junk").grid.tolist() == wide.tolist()


@pytest.mark.parametrize("text, why", [
    ("hello", "does not start"),
    ("[[1 2]\n [3", "no closing"),
    ("[[1 2]\n [3]]#", "ragged"),
    ("[[1 12]]#", "single digits"),
    ("", "does not start"),
])
def test_parser_reports_unparseable(text, why):
    parsed = parse_grid(text)
    assert parsed.grid is None and parsed.error.startswith("unparseable") and why in parsed.error


def test_prompt_pins_date_and_holds_demos_in_system(tokenizer):
    demos = [(np.array([[1]]), np.array([[2]]))]
    prompt, completion = prompt_and_completion(tokenizer, query_messages(demos, np.array([[3]])),
                                               answer_message(np.array([[4]])), "1 Jan 2001")
    assert "Today Date: 1 Jan 2001" in prompt
    system = prompt.split("<|start_header_id|>user")[0]
    assert "[[1]] -> [[2]]#\n" in system
    assert prompt.endswith("[[3]] -> <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert completion == "[[4]]#<|eot_id|>"


def test_label_mask_covers_exactly_the_answer(tokenizer):
    task = constant_task()
    prompt, completion = prompt_and_completion(tokenizer, query_messages(task.demos[:2], task.demos[2][0]),
                                               answer_message(task.demos[2][1]), "x")
    ids, labels = encode_pair(tokenizer, prompt, completion, all_tokens=False)
    supervised = [i for i, lab in zip(ids, labels) if lab != -100]
    assert tokenizer.decode(supervised) == "[[3 3]\n [3 3]]#<|eot_id|>"
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert all(lab == -100 for lab in labels[:n_prompt]) and labels[n_prompt:] == ids[n_prompt:]
    assert ids.count(tokenizer.bos_token_id) == 1
    _, all_labels = encode_pair(tokenizer, prompt, completion, all_tokens=True)
    assert all_labels == ids
    batch = collate([TrainExample(ids, labels), TrainExample(ids[:5], all_labels[:5])], tokenizer.pad_token_id, "cpu")
    assert (batch["labels"][1, 5:] == -100).all() and (batch["attention_mask"][1, 5:] == 0).all()


def test_every_augmenter_inverts_on_random_grids():
    rng = np.random.default_rng(0)
    augs = basic_augmenters() + size_augmenters() + chain_augmenters() + repeat_augmenters()
    assert [len(g()) for g in (basic_augmenters, size_augmenters, chain_augmenters, repeat_augmenters)] == [11, 3, 6, 3]
    for aug in augs:
        for shape in [(1, 1), (2, 5), (4, 3), (7, 7)]:
            grid = rng.integers(0, 10, size=shape).astype(np.uint8)
            bound = aug.bind(rng)
            assert np.array_equal(bound.invert(bound.apply(grid)), grid), aug.name


def test_geometric_variants_match_numpy():
    g = np.arange(6).reshape(2, 3)
    expected = {"rot90": np.rot90(g), "rot180": np.rot90(g, 2), "flip_0": np.flipud(g),
                "flip_1": np.fliplr(g), "transpose": g.T}
    for name, want in expected.items():
        assert np.array_equal(Geometric(name).apply(g), want), name


def test_leave_out_counts_by_hand():
    demos = [(np.full((1, 1), k, np.uint8), np.full((1, 1), k, np.uint8)) for k in range(4)]
    assert len(leave_out_tasks(demos, 1)) == 4  # query i, the other 3 as demos
    two = leave_out_tasks(demos, 2)
    assert len(two) == 4 * 3 and all(len(t.demos) == 2 for t in two)


def test_ttt_data_filters_and_caps(tokenizer):
    task = load_tasks(DataConfig(preset=None, task_ids=["6150a2bd"], split="train"))[0]
    everything = Recipe(True, True, True, True)
    many = build_ttt_examples(task, everything, TTTConfig(max_examples=10_000, max_tokens=100_000), tokenizer, "x", 0)
    assert len(many) == len({tuple(e.input_ids) for e in many}) > 30  # duplicates removed
    capped = build_ttt_examples(task, everything, TTTConfig(max_examples=7), tokenizer, "x", 0)
    assert len(capped) == 7
    lengths = sorted(len(e.input_ids) for e in many)
    cut = lengths[len(lengths) // 2]
    short = build_ttt_examples(task, everything, TTTConfig(max_examples=10_000, max_tokens=cut), tokenizer, "x", 0)
    assert short and all(len(e.input_ids) < cut for e in short)
    # A 20x20 grid doubled in any direction leaves the 30x30 limit: those pseudo-tasks are dropped.
    big = [(np.zeros((20, 20), np.uint8), np.ones((20, 20), np.uint8))] * 3
    kept = augmented_pseudo_tasks(big, size_augmenters(), 1, 1, np.random.default_rng(0))
    assert kept and all(g.shape == (20, 20) for t in kept for g in t.grids())


LIMITS = SelfEditConfig()
GOOD = {
    "data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                        "use_chain_augmentations": False, "use_repeat_augmentations": True},
    "training": {"strategy": "train_using_all_tokens", "learning_rate": 1e-4, "num_train_epochs": 3},
}


def _with(path, value):
    obj = json.loads(json.dumps(GOOD))
    section, key = path
    if value is KeyError:
        del obj[section][key]
    else:
        obj[section][key] = value
    return json.dumps(obj)


def test_valid_recipe_parses_even_inside_a_fence():
    parsed = parse_recipe("```json\n" + json.dumps(GOOD) + "\n```", LIMITS)
    assert parsed.reason is None
    assert parsed.recipe == Recipe(True, False, False, True, "train_using_all_tokens", 1e-4, 3)
    assert [a.name for a in augmenters_for(parsed.recipe)][:2] == ["rot90", "rot270"]


@pytest.mark.parametrize("text, reason", [
    ("not json at all", "malformed"),
    ('{"data_generation": {"use_basic_augmentations": tru', "malformed"),
    ("[1, 2]", "malformed"),
    ('{"training": {}}', "incomplete"),
    (_with(("training", "learning_rate"), KeyError), "incomplete: missing learning_rate"),
    (_with(("data_generation", "use_size_augmentations"), KeyError), "incomplete: missing use_size_augmentations"),
    (_with(("data_generation", "use_basic_augmentations"), "yes"), "malformed"),
    (_with(("training", "strategy"), "train_harder"), "out of range: strategy"),
    (_with(("training", "learning_rate"), 5.0), "out of range: learning_rate"),
    (_with(("training", "learning_rate"), "fast"), "malformed: learning_rate"),
    (_with(("training", "num_train_epochs"), 0), "out of range: num_train_epochs"),
    (_with(("training", "num_train_epochs"), 2.5), "malformed: num_train_epochs"),
    (_with(("training", "num_train_epochs"), True), "malformed: num_train_epochs"),
])
def test_bad_recipes_get_a_reason(text, reason):
    parsed = parse_recipe(text, LIMITS)
    assert parsed.recipe is None and parsed.reason.startswith(reason), parsed.reason


def test_seal_presets_hold_the_papers_tasks():
    train = load_tasks(DataConfig(preset="seal_training"))
    evaluation = load_tasks(DataConfig(preset="seal_evaluation"))
    assert (len(train), len(evaluation)) == (12, 10)
    assert sum(len(t.test_inputs) for t in train) == 13 and sum(len(t.test_inputs) for t in evaluation) == 11
    assert all(t.test_outputs is not None for t in train + evaluation)
    with pytest.raises(ValueError, match="not found"):
        load_tasks(DataConfig(preset=None, task_ids=["nope"]))


DETERMINISM_SCRIPT = """
import hashlib, sys
from seal.config import DataConfig, EvalConfig, Recipe, TTTConfig
from seal.evaluate import build_queries
from seal.model import load_tokenizer
from seal.tasks import load_tasks
from seal.ttt_data import build_ttt_examples
tok = load_tokenizer(sys.argv[1])
task = load_tasks(DataConfig(preset=None, task_ids=["6150a2bd"], split="train"))[0]
h = hashlib.sha256()
for e in build_ttt_examples(task, Recipe(True, True, True, True), TTTConfig(max_examples=40), tok, "x", 3):
    h.update(repr((e.input_ids, e.labels)).encode())
for q in build_queries(task, tok, EvalConfig(), "x", 3):
    h.update(q.prompt.encode())
print(h.hexdigest())
"""


def test_outputs_do_not_depend_on_python_hash_seed(tiny_model_dir):  # noqa: F811
    procs = [  # both at once: start-up (imports) dominates
        subprocess.Popen([sys.executable, "-c", DETERMINISM_SCRIPT, str(tiny_model_dir)], cwd=REPO, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)})
        for seed in ("1", "2")
    ]
    digests = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        digests.append(out.strip().splitlines()[-1])
    assert digests[0] == digests[1] and len(digests[0]) == 64
