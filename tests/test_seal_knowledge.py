"""Knowledge incorporation with a tiny local Llama on CPU: rewards, the whole loop, resume, preset=test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from seal.config import KnowledgeConfig, LoraSettings, ModelConfig, RestemConfig, SealConfig, StageConfig
from seal.knowledge.data import Passage, Question
from seal.loop import SealInputError
from seal.stages import Session, run_stage
from seal.tiny_data import memorising_self_edit
from tests.seal_fixtures import tiny_model_dir  # noqa: F401  (fixture)

# Invented facts no model can know.
PASSAGES = [
    Passage("quor", "Isle of Quor", "The Isle of Quor exports amber kelp. Its harbour master is Lio Vant.",
            [Question("Who is the harbour master of Quor?", "Lio Vant", ["Lio Vant"])]),
    Passage("drell", "Drell beetle", "The Drell beetle sings at dusk and nests in copper moss.",
            [Question("Where does the Drell beetle nest?", "copper moss", ["copper moss"])]),
]


def knowledge_config(run_dir, model_dir, **knowledge) -> SealConfig:
    k = dict(source="invented", num_self_edits=1, temperature=0.1, max_new_tokens=160, epochs=30,
             learning_rate=1e-2, reward_metric="exact_match", judge_max_new_tokens=4)
    return SealConfig(run_dir=str(run_dir), domain="knowledge", stage=StageConfig(name="loop", rounds=1),
                      model=ModelConfig(name_or_path=str(model_dir), device="cpu", dtype="float32"),
                      lora=LoraSettings(r=8, alpha=16), knowledge=KnowledgeConfig(**{**k, **knowledge}),
                      restem=RestemConfig(lora=LoraSettings(r=16, alpha=32), num_train_epochs=30,
                                          learning_rate=1e-2, batch_size=1))


@pytest.fixture(scope="module")
def session(tiny_model_dir, tmp_path_factory):  # noqa: F811
    s = Session(knowledge_config(tmp_path_factory.mktemp("run"), tiny_model_dir), PASSAGES)
    s.use_model(str(tiny_model_dir))
    return s


def test_memorising_self_edit_earns_reward_and_untrained_does_not(session, tmp_path):
    domain, passage = session.domain, PASSAGES[0]
    slots = [{"prompt": "p", "response": memorising_self_edit(passage)}, {"prompt": "p", "response": "   "}]
    trained = domain.apply(session, passage, slots, tmp_path)
    assert [s["status"] for s in trained] == ["trained", "rejected"] and "empty" in trained[1]["reason"]
    assert trained[0]["sequences"][0].startswith("Isle of Quor\nAnswer the question")
    assert trained[0]["last_loss"] < trained[0]["first_loss"]
    # The same self-edit with 0 epochs: LoRA B = 0, so the adapter is the base model itself.
    cfg0 = dataclasses.replace(session.cfg, knowledge=dataclasses.replace(session.cfg.knowledge, epochs=0))
    session.cfg, saved = cfg0, session.cfg
    try:
        untrained = domain.apply(session, passage, slots[:1], tmp_path)
    finally:
        session.cfg = saved
    assert untrained[0]["steps"] == 0
    scores = domain.evaluate(session, passage, trained + untrained)
    assert scores["baseline"]["exact_match"] == 0.0  # the base model cannot know an invented fact
    assert scores["self_edits"]["0"]["questions"][0]["answer"] == "Lio Vant"
    assert scores["self_edits"]["0"]["exact_match"] == 1.0 and scores["rewards"]["0"] == 1.0
    assert scores["rewards"]["1"] == 0.0
    assert scores["self_edits"]["2"]["exact_match"] == 0.0 and scores["rewards"]["2"] == 0.0
    assert not hasattr(session.model, "peft_config") or not session.model.peft_config  # adapters removed
    # Continuous reward = adapted - baseline accuracy.
    session.cfg = dataclasses.replace(saved, knowledge=dataclasses.replace(saved.knowledge, reward="continuous",
                                                                          reward_metric="f1"))
    try:
        cont = domain.evaluate(session, passage, trained)
    finally:
        session.cfg = saved
    assert cont["rewards"]["0"] == pytest.approx(1.0 - cont["baseline"]["f1"])
    pairs = domain.restem_pairs(passage, trained + untrained, scores)
    assert pairs == [("p", memorising_self_edit(passage))]  # the best rewarded self-edit only


def test_kill_between_passages_then_resume_and_stage_order(tiny_model_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    cfg = knowledge_config(tmp_path, tiny_model_dir, epochs=1)
    with pytest.raises(SealInputError, match=r"run stage=self_edit stage.round=0 first"):
        run_stage(dataclasses.replace(cfg, stage=StageConfig(name="evaluate")), PASSAGES)
    from seal.domains.knowledge import KnowledgeDomain

    real, calls = KnowledgeDomain.apply, []

    def dying(self, session, item, slots, adapter_dir):
        calls.append(item.passage_id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while working on the second passage
        return real(self, session, item, slots, adapter_dir)

    monkeypatch.setattr(KnowledgeDomain, "apply", dying)
    with pytest.raises(KeyboardInterrupt):
        run_stage(dataclasses.replace(cfg, stage=StageConfig(name="self_edit")), PASSAGES)
    edits = tmp_path / "round_0" / "self_edits"
    assert sorted(p.name for p in edits.glob("*.json")) == ["quor.json"]
    first = (edits / "quor.json").stat().st_mtime_ns
    monkeypatch.setattr(KnowledgeDomain, "apply", real)
    capsys.readouterr()
    run_stage(dataclasses.replace(cfg, stage=StageConfig(name="self_edit")), PASSAGES)
    log = capsys.readouterr().out
    assert "skip quor: self_edits already trained" in log and "skip drell" not in log
    assert (edits / "quor.json").stat().st_mtime_ns == first and (edits / "drell.json").exists()
    with pytest.raises(SealInputError, match=r"run stage=evaluate stage.round=0 first"):
        run_stage(dataclasses.replace(cfg, stage=StageConfig(name="restem")), PASSAGES)
    # A changed setting redoes the work instead of skipping it.
    changed = dataclasses.replace(cfg, knowledge=dataclasses.replace(cfg.knowledge, epochs=2),
                                  stage=StageConfig(name="self_edit"))
    run_stage(changed, PASSAGES)
    log = capsys.readouterr().out
    assert log.count("the settings changed") == 2 and "skip" not in log


def test_preset_test_runs_the_whole_loop_to_restem(tmp_path):
    """preset=test as composed by Hydra: taught tiny model, 3 invented passages, 2 rounds."""
    from hydra import compose, initialize_config_dir

    from seal.__main__ import CONFIG_DIR, prepare_model, to_dataclass

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = to_dataclass(compose(config_name="cfg_seal", overrides=["preset=test", f"output_dir={tmp_path}"]))
    assert (cfg.domain, cfg.stage.rounds, cfg.run_dir, cfg.knowledge.source) == ("knowledge", 2, str(tmp_path), "invented")
    assert cfg.model.name_or_path == str(tmp_path / "tiny_model") and cfg.model.build_tiny == "knowledge"
    prepare_model(cfg)
    out = run_stage(cfg)
    run = Path(cfg.run_dir)
    assert len(out["rounds"]) == 2
    for r in range(2):
        res = json.loads((run / f"round_{r}" / "results.json").read_text())
        rewards = [x for p in res["passages"].values() for x in p["rewards"].values()]
        s = res["summary"]
        assert s["num_passages"] == 3 and s["num_self_edits"] == len(rewards) == 6
        assert s["reward_mean"] == pytest.approx(sum(rewards) / 6)
        assert s["success_rate"] == pytest.approx(sum(x > 0 for x in rewards) / 6) and s["success_rate"] > 0
        assert s["baseline_exact_match"] == 0.0 and s["adapted_exact_match"] > 0
        graded = [q for p in res["passages"].values()
                  for part in [p["baseline"], *p["self_edits"].values()] for q in part.get("questions", [])]
        assert len(graded) == 5 * 3  # 5 questions, each graded without an adapter and with each of 2 self-edits
        assert s["judge_unparseable"] == sum(q["verdict"] == "unparseable" for q in graded)
    r0 = json.loads((run / "round_0" / "restem" / "summary.json").read_text())
    r1 = json.loads((run / "round_1" / "restem" / "summary.json").read_text())
    assert r0["num_pairs"] >= 1 and r1["base_model"] == r0["next_model"] == str(run / "round_0" / "restem" / "model")
    trend = json.loads((run / "trend.json").read_text())
    assert trend["round"] == [0, 1] and trend["baseline"] == [0.0, 0.0]
    assert (run / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_presets_compose_with_overrides_after_them():
    from hydra import compose, initialize_config_dir

    from seal.__main__ import CONFIG_DIR, to_dataclass

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        squad = to_dataclass(compose(config_name="cfg_seal", overrides=[
            "preset=knowledge_incorporation_squad", "model=qwen2_5_7b_4bit", "max_iterations=3", "lora.r=16"]))
        arc = to_dataclass(compose(config_name="cfg_seal", overrides=["preset=few_shot_learning_arc"]))
        single = to_dataclass(compose(config_name="cfg_seal", overrides=["preset=test", "stage=evaluate"]))
    assert (single.stage.name, single.domain) == ("evaluate", "knowledge")  # a preset never overrides the stage
    assert (squad.domain, squad.model.name_or_path, squad.model.quantization) == ("knowledge", "Qwen/Qwen2.5-7B", "4bit")
    assert (squad.lora.r, squad.lora.alpha, squad.stage.rounds) == (16, 64, 3)
    k = squad.knowledge
    assert (k.source, k.num_self_edits, k.temperature, k.top_p, k.epochs, k.learning_rate, k.batch_size) == (
        "hub", 5, 1.0, 0.95, 10, 1e-3, 1)
    assert (arc.domain, arc.model.name_or_path, arc.lora.r, arc.data.preset) == (
        "arc", "meta-llama/Llama-3.2-1B-Instruct", 128, "seal_training")


def test_cpt_mode_one_adapter_over_all_passages(tiny_model_dir, tmp_path):  # noqa: F811
    cfg = knowledge_config(tmp_path, tiny_model_dir, mode="cpt", epochs=1)
    out = run_stage(cfg, PASSAGES)
    adapter = json.loads((tmp_path / "cpt" / "adapters" / "0.json").read_text())
    # One adapter trained on both passages' self-edits (plus each passage itself), answering both.
    assert adapter["num_sequences"] >= 4 and set(adapter["answers"]) == {"quor", "drell"}
    assert out["summary"]["num_passages"] == 2 and out["summary"]["num_self_edits"] == 2
    assert set(json.loads((tmp_path / "cpt" / "results.json").read_text())["passages"]) == {"quor", "drell"}
