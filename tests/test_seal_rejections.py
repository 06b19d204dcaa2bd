"""SEAL reports rejected self-edits (console + stage summary) and re-runs them after a config change."""

from __future__ import annotations

import dataclasses
import json

from seal.stages import run_stage
from tests.seal_fixtures import constant_task, tiny_config, tiny_model_dir  # noqa: F401  (fixture)


def test_rejected_recipes_reported_then_rerun_after_config_change(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    cfg = tiny_config(tmp_path, tiny_model_dir, stage="ttt")
    capped = dataclasses.replace(cfg, ttt=dataclasses.replace(cfg.ttt, max_steps=3))
    tasks = [constant_task("task_a")]
    run_stage(capped, tasks)
    log = capsys.readouterr().out
    assert "task_a[0] rejected: out of range:" in log and "exceed the cap of 3" in log
    assert "ttt: 1 of 1 self-edits rejected" in log
    summary = json.loads((tmp_path / "ttt" / "self_edit_summary.json").read_text())
    assert summary["trained"] == 0 and summary["rejected"] == 1
    assert summary["rejections"][0]["task"] == "task_a" and "raise ttt.max_steps" in summary["rejections"][0]["reason"]

    run_stage(cfg, tasks)  # the cap raised: the rejected task is trained now, not skipped
    log = capsys.readouterr().out
    assert "redo task_a: the settings changed" in log and "rejected" not in log
    [slot] = json.loads((tmp_path / "ttt" / "recipes" / "task_a.json").read_text())
    assert slot["status"] == "trained"
    run_stage(cfg, tasks)  # same settings, succeeded: skipped
    assert "skip task_a: recipes already trained" in capsys.readouterr().out
