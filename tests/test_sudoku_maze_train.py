"""End to end on generated Sudokus: build, train a tiny TRM-MLP with the sudoku evaluator, evaluate.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from dataset import build_sudoku_dataset
from evaluate import EvaluateConfig, run_evaluation
from tests.puzzle_csv_fixtures import write_sudoku_source
from training.config import register_configs, to_pretrain_config
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
# The TRM README's Sudoku-MLP knobs at toy width: mlp_t across the 81 + prefix positions, no positions.
TINY_MLP = ["arch=trm_tiny", "arch.mlp_t=True", "arch.pos_encodings=none", "arch.hidden_size=32", "arch.num_heads=2",
            "arch.L_layers=1", "arch.H_cycles=1", "arch.L_cycles=1", "arch.puzzle_emb_ndim=32", "arch.puzzle_emb_len=2",
            "arch.halt_max_steps=2"]


def test_build_train_and_evaluate_sudoku(tmp_path):
    src = write_sudoku_source(tmp_path / "csv", n_train=32, n_test=10, seed=9)
    data = tmp_path / "sudoku"
    assert build_sudoku_dataset.main(["--source", str(src), "--output-dir", str(data), "--num-aug", "1",
                                      "--no-progress"]) == 0
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base="1.3"):
        cfg = to_pretrain_config(compose(config_name="cfg_sudoku_mlp", overrides=[
            *TINY_MLP, f"data_paths=[{data}]", f"checkpoint_path={tmp_path / 'run'}", "global_batch_size=8",
            "eval_global_batch_size=4", "epochs=4", "eval_interval=2", "lr=1e-3", "lr_warmup_steps=2", "ema=False",
            "device=cpu", "compile=false", "autocast=false", "wandb_mode=disabled", "log_interval=0"]))
    assert [e.name for e in cfg.evaluators] == ["sudoku"]
    trainer = Trainer(cfg)
    try:
        metrics = trainer.train()
    finally:
        trainer.close()
    # the evaluator's exact accuracy is the loss head's (all/exact_accuracy), over the 10 test puzzles
    assert metrics["Sudoku/num_puzzles"] == 10
    assert abs(metrics["Sudoku/exact_accuracy"] - metrics["all/exact_accuracy"]) < 1e-9
    assert 0 <= metrics["Sudoku/blank_cell_accuracy"] <= metrics["Sudoku/cell_accuracy"] <= 1
    reports = sorted((tmp_path / "run").glob("evaluator_SudokuEvaluator_step_*/report.html"))
    assert len(reports) == 2  # written at every evaluation

    out = tmp_path / "eval"
    result = run_evaluation(EvaluateConfig(checkpoint=str(tmp_path / "run"), device="cpu", output_dir=str(out),
                                           evaluators=[]))  # the run's own evaluators
    assert result["Sudoku/exact_accuracy"] == metrics["Sudoku/exact_accuracy"]
    assert json.loads((out / "metrics.json").read_text())["Sudoku/num_puzzles"] == 10
    saved = np.load(out / "predictions.npz", allow_pickle=False)
    test_inputs = np.load(data / "test" / "all__inputs.npy")
    assert (saved["inputs"] == test_inputs).all()  # test split order
    assert "<table class=\"sudoku\">" in (out / "report.html").read_text()


def test_build_and_train_maze_with_its_evaluator(tmp_path):
    from dataset import build_maze_dataset
    from tests.puzzle_csv_fixtures import write_maze_source

    src = write_maze_source(tmp_path / "csv", n_train=6, n_test=5, side=6, seed=2)
    data = tmp_path / "maze"
    assert build_maze_dataset.main(["--source", str(src), "--output-dir", str(data), "--aug", "--no-progress"]) == 0
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base="1.3"):
        cfg = to_pretrain_config(compose(config_name="cfg_maze", overrides=[
            *[o for o in TINY_MLP if "mlp_t" not in o and "pos_encodings" not in o], f"data_paths=[{data}]",
            f"checkpoint_path={tmp_path / 'run'}", "global_batch_size=4", "epochs=2", "eval_interval=2", "ema=True",
            "device=cpu", "compile=false", "autocast=false", "wandb_mode=disabled", "log_interval=0"]))
    assert cfg.arch.L_cycles == 1 and [e.name for e in cfg.evaluators] == ["maze"]
    trainer = Trainer(cfg)
    try:
        metrics = trainer.train()
    finally:
        trainer.close()
    assert metrics["Maze/num_puzzles"] == 5
    assert abs(metrics["Maze/exact_accuracy"] - metrics["all/exact_accuracy"]) < 1e-9
    assert metrics["Maze/path_optimal"] <= metrics["Maze/path_valid"]
    assert (tmp_path / "run" / f"evaluator_MazeEvaluator_step_{trainer.step:08d}" / "report.html").is_file()


def _swiglu(width: int, expansion: float = 4.0) -> int:
    inner = -(-round(expansion * width * 2 / 3) // 256) * 256  # the references' rounding: up to a multiple of 256
    return width * 2 * inner + inner * width


def test_benchmark_configs_have_the_reference_weight_counts():
    """Weights counted by hand from the layer shapes (paper / reference notes: TRM-MLP Sudoku 5.03M)."""
    from models.registry import build_model, count_parameters

    attention = 512 * 3 * 512 + 512 * 512
    heads = lambda vocab: 2 * vocab * 512 + 512 * 2 + 2  # noqa: E731  embeddings, lm_head, q_head
    cases = {  # config, overrides, (seq_len, vocab) -> expected
        ("cfg_sudoku_mlp", (), (81, 11)): 2 * (_swiglu(81 + 16) + _swiglu(512)) + heads(11),
        ("cfg_sudoku_att", (), (81, 11)): 2 * (attention + _swiglu(512)) + heads(11),
        ("cfg_maze", (), (900, 6)): 2 * (attention + _swiglu(512)) + heads(6),
        ("cfg_sudoku_mlp", ("arch=hrm",), (81, 11)): 8 * (attention + _swiglu(512)) + heads(11),
    }
    assert cases[("cfg_sudoku_mlp", (), (81, 11))] == 5_028_866
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base="1.3"):
        for (name, overrides, (seq_len, vocab)), expected in cases.items():
            cfg = to_pretrain_config(compose(config_name=name, overrides=list(overrides)))
            model = build_model(cfg.arch, batch_size=2, seq_len=seq_len, vocab_size=vocab, num_puzzle_identifiers=1)
            assert count_parameters(model) == expected, (name, overrides)
