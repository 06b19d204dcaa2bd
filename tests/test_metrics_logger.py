"""Metrics go to the console, metrics.jsonl and wandb (offline without an API key, never the network)."""

import json

import pytest

from training.metrics_logger import MetricsLogger, resolve_wandb_mode


def test_wandb_mode_follows_the_environment(monkeypatch):
    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_wandb_mode("auto") == "offline"  # no key: never try to reach the server
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"  # an explicit choice wins


def test_offline_wandb_run_and_jsonl_get_the_reference_metric_names(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = MetricsLogger(tmp_path, project="p", run_name="r", config={"lr": 1e-4}, total_steps=2)
    assert logger.wandb_mode == "offline"
    metrics = {"train/accuracy": 0.5, "train/exact_accuracy": 0.25, "train/lm_loss": 1.5, "train/lr": 1e-4}
    logger.log(metrics, step=1, console=True)
    logger.close()

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["step"] == 1
    assert {k: rows[0][k] for k in metrics} == metrics
    assert "train/exact_accuracy 0.25" in capsys.readouterr().out
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and any(offline_runs[0].glob("*.wandb"))  # written locally, ready for `wandb sync`
