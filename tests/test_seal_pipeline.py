"""SEAL with a tiny random Llama on CPU: loss, adapters, rewards, ReSTEM, the whole loop, resume, Hydra."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from seal.adapters import evaluate_task_adapters, fixed_recipe_slots, train_task_adapters
from seal.config import Recipe
from seal.model import load_model, load_tokenizer, sliced_lm_loss
from seal.restem import restem_examples, restem_update
from seal.self_edit import parse_recipe, propose_recipes, self_edit_messages
from seal.stages import Session, run_stage
from seal.train import collate
from seal.ttt_data import build_ttt_examples
from tests.seal_fixtures import (  # noqa: F401  (tiny_model_dir is a fixture)
    MEMORISE_RECIPE, MEMORISE_RESPONSE, constant_task, tiny_config, tiny_model_dir,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def session(tiny_model_dir, tmp_path_factory):  # noqa: F811
    cfg = tiny_config(tmp_path_factory.mktemp("run"), tiny_model_dir, stage="ttt")
    s = Session(cfg, [constant_task()])
    s.use_model(str(tiny_model_dir))
    return s


def test_sliced_loss_equals_full_logits_loss(session):
    task = constant_task()
    recipe = dataclasses.replace(MEMORISE_RECIPE, strategy="train_using_output_tokens")
    examples = build_ttt_examples(task, recipe, session.cfg.ttt, session.tokenizer, "x", 0)[:3]
    batch = collate(examples, session.tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        sliced = sliced_lm_loss(session.model, **batch)
        # Reference: full logits in float64, mean cross-entropy over the shifted supervised positions.
        logits = session.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp = torch.log_softmax(logits[:, :-1].double(), -1)
        target = batch["labels"][:, 1:]
        keep = target != -100
        expected = -logp[keep].gather(-1, target[keep][:, None]).mean()
    assert abs(float(sliced) - float(expected)) < 1e-4


def test_memorising_adapter_earns_reward_and_untrained_does_not(session, tmp_path):
    task = constant_task()
    untrained = dataclasses.replace(MEMORISE_RECIPE, num_train_epochs=0)  # LoRA B = 0: the base model
    slots = fixed_recipe_slots(MEMORISE_RECIPE) + fixed_recipe_slots(untrained)
    trained = train_task_adapters(session, task, slots, tmp_path / "adapters")
    assert [s["status"] for s in trained] == ["trained", "trained"]
    assert trained[0]["last_loss"] < trained[0]["first_loss"] and trained[1]["steps"] == 0
    result = evaluate_task_adapters(session, task, trained)
    assert result["recipes"]["0"]["reward"] == 1 and result["recipes"]["0"]["correct"] is True
    assert result["recipes"]["1"]["reward"] == 0 and result["recipes"]["1"]["correct"] is False
    assert result["correct"] is True and result["attempts"][0][0] == task.test_outputs[0].tolist()
    assert not hasattr(session.model, "peft_config") or not session.model.peft_config  # adapters unloaded


def test_invalid_and_oversized_recipes_get_reward_zero(session, tmp_path):
    task = constant_task()
    malformed = {"prompt": "p", "response": "{oops", "attempts": 3, "recipe": None,
                 "reason": parse_recipe("{oops", session.cfg.self_edit).reason}
    too_long = fixed_recipe_slots(dataclasses.replace(MEMORISE_RECIPE, num_train_epochs=500))
    slots = train_task_adapters(session, task, [malformed] + too_long, tmp_path / "adapters")
    assert [s["status"] for s in slots] == ["rejected", "rejected"]
    assert "exceed the cap of 375" in slots[1]["reason"]
    result = evaluate_task_adapters(session, task, slots)
    assert [r["reward"] for r in result["recipes"].values()] == [0, 0]
    assert result["recipes"]["0"]["reason"].startswith("malformed")
    assert not list((tmp_path / "adapters").glob("*"))


def _teach_recipe(model_dir, out_dir, cfg):
    """ReSTEM on one (prompt, recipe) pair: the merged model should then write that recipe."""
    tokenizer = load_tokenizer(str(model_dir))
    model, precision = load_model(cfg.model, torch.device("cpu"), name_or_path=str(model_dir))
    pairs = [(self_edit_messages(constant_task()), MEMORISE_RESPONSE)]
    for example in restem_examples(tokenizer, pairs, cfg.model.date_string):
        assert example.input_ids.count(tokenizer.bos_token_id) == 1  # no doubled BOS
    return restem_update(model, tokenizer, precision, pairs, cfg, out_dir, seed=0)


def test_restem_merged_model_reloads_and_writes_a_recipe(tiny_model_dir, tmp_path):  # noqa: F811
    cfg = tiny_config(tmp_path, tiny_model_dir)
    stats = _teach_recipe(tiny_model_dir, tmp_path / "merged", cfg)
    assert stats.last_loss < stats.first_loss
    saved = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "peft" not in json.dumps(saved).lower()  # a plain merged model, no adapter left
    s = Session(cfg, [constant_task()])
    s.use_model(str(tmp_path / "merged"))
    [slot] = propose_recipes(s.model, s.tokenizer, constant_task(), cfg.self_edit, cfg.model.date_string, seed=0)
    assert slot["reason"] is None and Recipe(**slot["recipe"]) == MEMORISE_RECIPE


def test_loop_end_to_end_then_resume_skips_done_tasks(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    cfg = tiny_config(tmp_path / "run", tiny_model_dir, stage="loop", rounds=2)
    _teach_recipe(tiny_model_dir, tmp_path / "start", cfg)  # a model that proposes a working recipe
    cfg.model.name_or_path = str(tmp_path / "start")
    tasks = [constant_task("task_a"), constant_task("task_b")]
    out = run_stage(cfg, tasks)
    run = Path(cfg.run_dir)
    r0 = json.loads((run / "round_0" / "results.json").read_text())
    assert r0["summary"]["total_tasks"] == 2 and r0["summary"]["total_adapters"] == 2
    assert r0["summary"]["success_rate"] == 1.0 and r0["summary"]["accuracy"] == 1.0
    assert set(r0["tasks"]) == {"task_a", "task_b"} and r0["tasks"]["task_a"]["recipes"]["0"]["reward"] == 1
    submission = json.loads((run / "round_0" / "submission.json").read_text())
    assert len(submission["task_a"]) == 1 and set(submission["task_a"][0]) == {"attempt_1", "attempt_2"}
    assert submission["task_a"][0]["attempt_1"] == [[3, 3], [3, 3]]
    restem0 = json.loads((run / "round_0" / "restem" / "summary.json").read_text())
    assert restem0["num_pairs"] == 2 and restem0["next_model"] == str(run / "round_0" / "restem" / "model")
    restem1 = json.loads((run / "round_1" / "restem" / "summary.json").read_text())
    assert restem1["base_model"] == restem0["next_model"]  # round 1 started from round 0's model
    assert len(out["rounds"]) == 2 and (run / "round_1" / "adapters" / "task_b" / "0").is_dir()

    # Resume: forget one task's evaluation; only that one is redone, everything else is skipped.
    (run / "round_1" / "evaluate" / "task_b.json").unlink()
    before = (run / "round_1" / "evaluate" / "task_a.json").stat().st_mtime_ns
    capsys.readouterr()
    run_stage(dataclasses.replace(cfg, stage=dataclasses.replace(cfg.stage, name="evaluate", round=1)), tasks)
    log = capsys.readouterr().out
    assert "skip task_a: already evaluated" in log and "skip task_b" not in log
    assert (run / "round_1" / "evaluate" / "task_b.json").exists()
    assert (run / "round_1" / "evaluate" / "task_a.json").stat().st_mtime_ns == before
    run_stage(cfg, tasks)
    log = capsys.readouterr().out
    assert log.count("recipes already trained") == 4 and log.count("restem of round") == 2


def test_hydra_config_composes_to_typed_config(tiny_model_dir, tmp_path):  # noqa: F811
    from hydra import compose, initialize_config_dir

    from seal.__main__ import CONFIG_DIR, to_dataclass

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        default = to_dataclass(compose(config_name="cfg_seal"))
        assert default.model.name_or_path == "meta-llama/Llama-3.2-1B-Instruct"
        assert (default.lora.r, default.lora.alpha, default.stage.name) == (128, 16, "loop")
        assert (default.restem.lora.r, default.restem.num_train_epochs, default.restem.learning_rate) == (16, 8, 5e-5)
        cfg = to_dataclass(compose(config_name="cfg_seal", overrides=[
            "stage=ttt", "model=local", f"model.name_or_path={tiny_model_dir}", "model.device=cpu", "lora=small",
            f"run_dir={tmp_path}", "data.task_ids=[6150a2bd]", "data.split=train", "ttt.max_examples=4",
            "ttt.fixed_recipe.num_train_epochs=1",
        ]))
        with pytest.raises(Exception, match="lora_rank"):  # the schema catches typos at start-up
            compose(config_name="cfg_seal", overrides=["lora.lora_rank=3"])
    assert cfg.stage.name == "ttt" and cfg.lora.r == 8 and cfg.data.task_ids == ["6150a2bd"]
    run_stage(cfg)
    [slot] = json.loads((tmp_path / "ttt" / "recipes" / "6150a2bd.json").read_text())
    assert slot["status"] == "trained" and slot["steps"] == 2  # 4 examples, batch 2, 1 epoch
