"""The offline Kaggle flow end to end on CPU: tiny checkpoint, three tasks, no network, time budget."""

import json
import socket

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from models.lora import merge_lora_state_dict

TINY_ARCH = dict(name="trm", H_cycles=1, L_cycles=1, L_layers=1, hidden_size=32, num_heads=2, expansion=2.0,
                 puzzle_emb_ndim=32, puzzle_emb_len=1, halt_max_steps=2, forward_dtype="float32")
FAST = ["global_batch_size=4", "eval_max_augmentations=2", "device=cpu", "compile=false", "autocast=false",
        "log_interval=0", "lr_warmup_steps=1", "lr=1e-2", "checkpoint_keep=1"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access during the Kaggle flow")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def make_challenges(path):
    def task(colour, tests):
        grid = [[colour, 0], [0, colour]]
        flipped = [[0, colour], [colour, 0]]
        return {"train": [{"input": grid, "output": flipped}, {"input": flipped, "output": grid}],
                "test": [{"input": grid} for _ in range(tests)]}

    challenges = {"aaaa1111": task(1, 1), "bbbb2222": task(2, 2), "cccc3333": task(3, 1)}
    path.write_text(json.dumps(challenges))
    return challenges


def make_checkpoint(folder, lora_with_ema=False):
    """A dense checkpoint; or one of a LoRA run (rank 2, trained-looking adapters) with EMA weights too."""
    from models.config import ArchConfig
    from models.lora import apply_lora
    from models.registry import build_model
    from training.config import PretrainConfig

    torch.manual_seed(0)
    arch = ArchConfig(**TINY_ARCH)
    head = build_model(arch, batch_size=4, seq_len=900, vocab_size=12, num_puzzle_identifiers=3)
    folder.mkdir(parents=True)
    if lora_with_ema:
        apply_lora(head, rank=2, alpha=4.0)
        state = {k: v.contiguous() for k, v in head.state_dict().items()}
        save_file({k: v + 0.1 * torch.randn_like(v) if k.endswith("lora_B") else v for k, v in state.items()},
                  str(folder / "model.safetensors"))
        save_file({k: v + 0.1 * torch.randn_like(v) for k, v in state.items()}, str(folder / "ema.safetensors"))
    else:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "identifiers.json").write_text(json.dumps(["<blank>", "old1", "old2"]))
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(PretrainConfig(arch=arch))))
    return folder


def check_submission(path, challenges):
    submission = json.loads(path.read_text())
    assert sorted(submission) == sorted(challenges)
    for task_id, task in challenges.items():
        entries = submission[task_id]
        assert len(entries) == len(task["test"])
        for entry in entries:
            assert sorted(entry) == ["attempt_1", "attempt_2"]
            for grid in entry.values():
                assert grid and all(isinstance(v, int) and 0 <= v <= 9 for row in grid for v in row)
    return submission


def test_kaggle_flow_end_to_end(tmp_path):
    from kaggle.run_kaggle import main

    challenges = make_challenges(tmp_path / "arc-agi_test_challenges.json")
    # A solutions file beside the challenges must NOT be used (Kaggle has none).
    (tmp_path / "arc-agi_test_solutions.json").write_text(json.dumps({"aaaa1111": [[[9]]]}))
    ckpt = make_checkpoint(tmp_path / "attached" / "step_00000100", lora_with_ema=True)
    work, out = tmp_path / "work", tmp_path / "submission.json"
    rc = main(["--challenges", str(tmp_path / "arc-agi_test_challenges.json"), "--checkpoint", str(ckpt),
               "--output", str(out), "--work-dir", str(work), "--time-budget-min", "5", "--num-aug", "1",
               "--workers", "1", "epochs=4", "eval_interval=4", *FAST, f"arch.halt_max_steps={TINY_ARCH['halt_max_steps']}"])
    assert rc == 0
    check_submission(out, challenges)
    summary = json.loads((work / "run_summary.json").read_text())
    assert summary["steps"] == summary["total_steps"] > 0 and not summary["stopped_by_time"]
    assert summary["fallback_entries"] == 0  # every test input got a voted answer
    test_puzzles = json.loads((work / "data" / "test_puzzles.json").read_text())
    assert all("output" not in t for task in test_puzzles.values() for t in task["test"])

    # Started from the EMA weights with the checkpoint's adapters merged; then LoRA rank 1 (the preset):
    # only the fresh adapters and the puzzle rows moved away from those initial weights.
    (run_ckpt,) = sorted((work / "run").glob("step_*"))
    trained = load_file(str(run_ckpt / "model.safetensors"))
    initial = merge_lora_state_dict(load_file(str(ckpt / "ema.safetensors")))
    adapters = [k for k in trained if k.endswith("lora_B")]
    assert adapters and any(torch.count_nonzero(trained[k]) for k in adapters)
    assert all(trained[k.replace("lora_B", "lora_A")].shape[0] == 1 for k in adapters)
    assert set(trained) - set(initial) == {k for k in trained if ".lora_" in k}
    for key, value in initial.items():
        if not key.endswith("puzzle_emb.weights"):
            torch.testing.assert_close(trained[key], value, rtol=0, atol=1e-6, msg=key)
    config = OmegaConf.load(run_ckpt / "config.yaml")
    assert config.arch.lora_rank == 1 and config.arch.hidden_size == 32  # arch from the checkpoint


def test_time_budget_stops_training_and_still_submits(tmp_path):
    from kaggle.run_kaggle import main

    challenges = make_challenges(tmp_path / "arc-agi_test_challenges.json")
    ckpt = make_checkpoint(tmp_path / "ckpt")
    work, out = tmp_path / "work", tmp_path / "submission.json"
    rc = main(["--challenges", str(tmp_path / "arc-agi_test_challenges.json"), "--checkpoint", str(ckpt),
               "--output", str(out), "--work-dir", str(work), "--time-budget-min", "0.1", "--margin-min", "0",
               "--num-aug", "1", "--workers", "1", "epochs=100000", "eval_interval=100000", *FAST])
    assert rc == 0
    check_submission(out, challenges)
    summary = json.loads((work / "run_summary.json").read_text())
    assert summary["stopped_by_time"] and 0 < summary["steps"] < summary["total_steps"]
    assert summary["seconds"] < summary["budget_seconds"] + 10


def test_failure_leaves_the_fallback_submission(tmp_path, capsys):
    from kaggle.run_kaggle import main

    challenges = make_challenges(tmp_path / "arc-agi_test_challenges.json")
    out = tmp_path / "submission.json"
    rc = main(["--challenges", str(tmp_path / "arc-agi_test_challenges.json"), "--checkpoint", "org/not-cached",
               "--output", str(out), "--work-dir", str(tmp_path / "work"), "--num-aug", "0", "--workers", "1"])
    assert rc == 2 and "HF_HUB_OFFLINE" in capsys.readouterr().err  # a user error: one line, exit 2
    submission = check_submission(out, challenges)
    assert submission["bbbb2222"][1] == {"attempt_1": [[0]], "attempt_2": [[0]]}


def test_notebook_is_valid_and_uses_existing_options():
    import re
    from pathlib import Path

    from kaggle.run_kaggle import parse_args

    notebook = json.loads((Path(__file__).resolve().parents[1] / "kaggle" / "arc_prize_submission.ipynb").read_text())
    assert notebook["nbformat"] == 4
    source = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    flags = set(re.findall(r'"(--[a-z-]+)"', source))
    assert {"--challenges", "--checkpoint", "--output", "--time-budget-min"} <= flags
    args, rest = parse_args([arg for flag in sorted(flags) for arg in (flag, "1")])
    assert rest == [] and args.time_budget_min == 1.0
    assert "--no-index" in source  # installs from attached wheels only


@pytest.mark.parametrize("override, key", [("+lrr=1e-3", "lrr"), ("lrr=1e-3", "lrr"), ("lr=-1", "lr")])
def test_bad_override_stops_in_one_line_before_the_build(tmp_path, capsys, override, key):
    from kaggle.run_kaggle import main

    challenges = make_challenges(tmp_path / "arc-agi_test_challenges.json")
    ckpt = make_checkpoint(tmp_path / "attached" / "step_00000100")
    out, work = tmp_path / "submission.json", tmp_path / "work"
    rc = main(["--challenges", str(tmp_path / "arc-agi_test_challenges.json"), "--checkpoint", str(ckpt),
               "--output", str(out), "--work-dir", str(work), "--num-aug", "1", "--workers", "1", override])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: config: ") and f" {key}" in err and "\n" not in err, err
    assert not (work / "data").exists()
    check_submission(out, challenges)  # the fallback stays
