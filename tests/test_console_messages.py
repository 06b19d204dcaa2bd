"""What a person sees on the console: evaluation progress and durations, where the outputs are, a
finished run saying so, metrics in natural order, one-line errors, and no warnings from our calls."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import evaluate
import pretrain
from tests.dataset_fixtures import write_tiny_dataset
from training.metrics_logger import MetricsLogger, format_metrics
from training.progress import natural_key
from training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
ARCH = ["arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=1", "arch.L_cycles=1",
        "arch.puzzle_emb_ndim=32", "arch.puzzle_emb_len=1", "arch.halt_max_steps=2"]
TINY = [*ARCH, "global_batch_size=4", "epochs=2", "eval_interval=1", "ema=True", "wandb_mode=disabled", "device=cpu"]


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base="1.3"):
        return compose(config_name="cfg_tiny_cpu", overrides=overrides)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny"
    write_tiny_dataset(path, num_tasks=3, augs_per_task=1, examples_per_puzzle=2)
    return path


def _our_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Warnings attributed to a file of this repository (a library warns with stacklevel pointing at its caller)."""
    return [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught
            if Path(w.filename).resolve().is_relative_to(REPO) and "site-packages" not in w.filename
            and issubclass(w.category, (FutureWarning, DeprecationWarning, UserWarning))]


def test_train_and_evaluate_print_progress_durations_outputs_and_no_warnings(data, tmp_path, capsys):
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrain.train(compose_cfg([f"data_paths=[{data}]", f"checkpoint_path={run}", *TINY]))
        out, err = capsys.readouterr()
        metrics = evaluate.run_evaluation(evaluate.EvaluateConfig(checkpoint=str(run), device="cpu"))
        eval_out, eval_err = capsys.readouterr()
    assert _our_warnings(caught) == []

    # The start-up line stands alone (printed before the bar) and counts weights.
    startup = next(line for line in out.splitlines() if line.startswith("[cpu x1] run folder"))
    assert "weights," in startup and "trainable" in startup and "train:" not in startup
    # Two evaluations (eval_interval=1, epochs=2): a bar each (2 test batches of 4 rows, 2 ACT steps) and a duration.
    assert "eval at step 1" in err and "eval at step 2" in err and "ACT steps 2" in err and "/2 [" in err
    assert [line.split(" took ")[0] for line in out.splitlines() if " took " in line] == ["eval at step 1",
                                                                                         "eval at step 2"]
    last = run / "step_00000002"
    evaluation = run / "evaluator_ARCEvaluator_step_00000002"
    assert out.strip().splitlines()[-1] == (f"outputs: checkpoint {last}; submission.json {evaluation / 'submission.json'}; "
                                            f"report.html {evaluation / 'report.html'}")
    # evaluate.py: its bar, its duration, pass@k in natural order, where its files are.
    assert "ACT steps 2" in eval_err and "evaluation took " in eval_out
    passes = [item.split("=")[0] for item in next(line for line in eval_out.splitlines()
                                                   if line.startswith("ARC/pass@1=")).split()]
    assert passes[:6] == [f"ARC/pass@{k}" for k in (1, 2, 5, 10, 100, 1000)]
    assert f"submission.json {last / 'evaluation' / 'submission.json'}" in eval_out and metrics is not None

    # Re-running the finished run says so instead of "resumed at step N", and trains nothing.
    pretrain.train(compose_cfg([f"data_paths=[{data}]", f"checkpoint_path={run}", *TINY]))
    again = capsys.readouterr().out
    assert "already complete at step 2 of 2" in again and "resumed" not in again and " took " not in again


def test_ddp_wrapping_does_not_use_deprecated_arguments(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wrapped = Trainer._wrap_distributed(types.SimpleNamespace(device=torch.device("cpu")),
                                                torch.nn.Linear(2, 2))
        assert _our_warnings(caught) == []
        assert wrapped.forward_sync_buffers is False if hasattr(wrapped, "forward_sync_buffers") else True
    finally:
        dist.destroy_process_group()


def test_metrics_print_in_natural_order():
    names = ["ARC/pass@1000", "ARC/pass@10", "ARC/pass@2", "ARC/pass@100", "ARC/pass@1", "ARC/pass@5", "all/accuracy"]
    assert sorted(names, key=natural_key) == ["ARC/pass@1", "ARC/pass@2", "ARC/pass@5", "ARC/pass@10",
                                              "ARC/pass@100", "ARC/pass@1000", "all/accuracy"]
    assert format_metrics({"ARC/pass@10": 0.5, "ARC/pass@2": 0.25}, 3) == "step 3 | ARC/pass@2 0.25 | ARC/pass@10 0.5"


def test_training_bar_rate_leaves_evaluation_time_out(tmp_path):
    clock = [0.0]
    logger = MetricsLogger(tmp_path, project="p", run_name="r", config={}, wandb_mode="disabled", total_steps=10)
    bar = logger.bar
    bar._time = lambda: clock[0]
    bar.start_t = bar.last_print_t = 0.0
    clock[0] = 1.0
    logger.progress(1)
    clock[0] = 1.5
    logger.pause_clock()  # an evaluation of 100 s
    clock[0] = 101.5
    logger.resume_clock()
    clock[0] = 102.0
    logger.progress(2)
    assert bar.format_dict["elapsed"] == pytest.approx(2.0)  # 2 steps in 2 s of training, not 102 s
    logger.close()


def test_missing_dataset_folder_is_one_line_with_the_build_command(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, str(REPO / "pretrain.py"), "--config-name", "cfg_tiny_cpu",
                             "data_paths=[data/nope]"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset data/nope: no such folder; build it with "
                                                   "`python -m dataset.build_arc_dataset --output-dir data/nope`")
    assert not (tmp_path / "checkpoints").exists()


def test_default_data_path_is_the_one_the_readme_builds():
    readme = (REPO / "README.md").read_text()
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base="1.3"):
        default = compose(config_name="cfg_pretrain").data_paths
    assert default == ["data/arc1-aug-1000"]
    assert f"python -m dataset.build_arc_dataset --output-dir {default[0]}" in readme


def test_time_budget_message_rounds_the_minutes(data, tmp_path, capsys):
    """A budget computed to many digits (run_kaggle subtracts elapsed seconds) prints as 0.01, not 0.0123456."""
    pretrain.train(compose_cfg([f"data_paths=[{data}]", f"checkpoint_path={tmp_path / 'run'}", *TINY, "evaluators=[]",
                                "max_train_minutes=0.0123456", "final_eval_reserve_minutes=1"]))
    assert "max_train_minutes=0.01: stopped at step 1 of 2" in capsys.readouterr().out


def test_missing_dataset_hint_names_the_builder_of_its_benchmark():
    from dataset.puzzle_dataset import _build_hint

    assert "dataset.build_sudoku_dataset --output-dir data/sudoku-extreme-1k-aug-1000" in _build_hint(
        "data/sudoku-extreme-1k-aug-1000")
    assert "dataset.build_maze_dataset --output-dir data/maze-30x30-hard-1k" in _build_hint("data/maze-30x30-hard-1k")
    assert "dataset.build_arc_dataset --output-dir data/arc1concept-aug-1000" in _build_hint("data/arc1concept-aug-1000")
