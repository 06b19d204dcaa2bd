"""Diverged runs stop with the newest good checkpoint named; resume skips damaged checkpoints and keeps
one clean metrics history; a hung rank ends the job. (Issue 10, divergence / resume items.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import training.trainer as trainer_module
from tests.dataset_fixtures import write_tiny_dataset
from tests.test_pretrain import read_jsonl, tiny_cfg
from training.checkpoint import list_checkpoints, load_checkpoint
from training.divergence import read_health
from training.trainer import NonFiniteLossError, Trainer
from utils.errors import exit_on_user_error

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny"
    write_tiny_dataset(path, num_tasks=3, augs_per_task=1, examples_per_puzzle=2)
    return path


def _poison_from(trainer: Trainer, first_call: int) -> None:
    """Every forward pass from the ``first_call``-th on returns a NaN loss (a diverged model)."""
    original, calls = trainer.train_model, [0]

    def poisoned(**kwargs):
        calls[0] += 1
        carry, loss, metrics, preds, done = original(**kwargs)
        return carry, (loss * float("nan") if calls[0] >= first_call else loss), metrics, preds, done

    trainer.train_model = poisoned


def _count_writes(monkeypatch) -> list[int]:
    written = []
    save = trainer_module.save_checkpoint

    def counting(run_dir, step, **kw):
        written.append(step)
        return save(run_dir, step, **kw)

    monkeypatch.setattr(trainer_module, "save_checkpoint", counting)
    return written


# ----- divergence -----------------------------------------------------------------------------------

def test_skip_policy_stops_after_max_consecutive_skips_naming_the_newest_good_checkpoint(data, tmp_path, monkeypatch,
                                                                                        capsys):
    written = _count_writes(monkeypatch)
    run = tmp_path / "run"
    trainer = Trainer(tiny_cfg(data, run, "global_batch_size=4", "nonfinite_policy=skip", "nonfinite_max_skips=3",
                               "checkpoint_every_n_steps=1", "max_steps=20"))
    _poison_from(trainer, 3)  # steps 1 and 2 train; every later forward pass is NaN
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    trainer.close(failed=True)
    # step_1's weights gave a finite loss at step 2: good. step_2's gave NaN at step 3: diverged.
    assert str(info.value) == (f"non-finite loss (nan) at step 3; stopped: 3 consecutive non-finite losses "
                               f"(nonfinite_max_skips=3); the newest good checkpoint (finite weights, finite loss "
                               f"at the next step) is {run / 'step_00000001'}")
    assert trainer.step == 2 and trainer.nonfinite_skipped == 2
    assert written == [1, 2]  # the skipped steps did not rewrite step_2
    assert [read_health(p)["verdict"] for _, p in list_checkpoints(run)] == ["good", "diverged"]
    assert read_health(run / "step_00000002")["next_loss"] != read_health(run / "step_00000002")["next_loss"]  # NaN
    with pytest.raises(SystemExit) as stop, exit_on_user_error():
        raise info.value
    assert stop.value.code == 3
    monkeypatch.undo()
    capsys.readouterr()
    again = Trainer(tiny_cfg(data, run, "global_batch_size=4", "max_steps=20"))  # re-running the command
    again.close()
    assert again.step == 1 and "resume: skipped step_00000002: its weights gave a non-finite loss" in capsys.readouterr().out


def test_stop_without_any_good_checkpoint_says_so(data, tmp_path):
    trainer = Trainer(tiny_cfg(data, tmp_path / "run", "global_batch_size=4", "nonfinite_policy=stop",
                               "checkpoint_every_n_steps=1", "max_steps=5"))
    _poison_from(trainer, 2)  # step_1 is written, then its weights give NaN
    with pytest.raises(NonFiniteLossError, match=f"no checkpoint in {tmp_path / 'run'} is known good"):
        trainer.train()
    trainer.close(failed=True)
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [1]


def test_weights_with_nan_are_refused_up_front_naming_the_tensor(data, tmp_path):
    from safetensors.torch import save_file

    trainer = Trainer(tiny_cfg(data, tmp_path / "a", "global_batch_size=4"))
    state = {k: v.clone() for k, v in trainer.head.state_dict().items()}
    trainer.close()
    key = next(k for k in state if k.endswith("q_head.weight"))
    state[key][0, 0] = float("inf")
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(Exception, match=f"w.safetensors: tensor {key} holds NaN or inf"):
        Trainer(tiny_cfg(data, tmp_path / "b", "global_batch_size=4", f"load_checkpoint={tmp_path / 'w.safetensors'}"))


# ----- resume -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("damaged", ["model.safetensors", "train_state.json", "train_state.safetensors"])
def test_resume_skips_a_damaged_newest_checkpoint_and_ends_bit_identical(data, tmp_path, capsys, damaged):
    common = ("global_batch_size=4", "checkpoint_every_n_steps=1", "checkpoint_keep=0", "carry_on_resume=restore")
    run = tmp_path / "run"
    first = Trainer(tiny_cfg(data, run, *common, "max_steps=3"))
    first.train()
    first.close()
    reference = load_checkpoint(run / "step_00000003").model_state
    broken = run / "step_00000003" / damaged
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # truncated after it was written
    capsys.readouterr()
    resumed = Trainer(tiny_cfg(data, run, *common, "max_steps=3"))
    out = capsys.readouterr().out
    assert resumed.step == 2 and f"resume: skipped step_00000003: {broken}: " in out
    resumed.train()  # step 3 again, written over the damaged folder
    resumed.close()
    for key, value in load_checkpoint(run / "step_00000003").model_state.items():
        assert torch.equal(value, reference[key]), key


def test_interrupted_overwrite_leftovers_are_cleaned_or_restored(data, tmp_path):
    run = tmp_path / "run"
    first = Trainer(tiny_cfg(data, run, "global_batch_size=4", "checkpoint_every_n_steps=1", "max_steps=2"))
    first.train()
    first.close()
    # Killed between the two renames of an overwrite of step_2: only the moved-aside copy is left.
    os.replace(run / "step_00000002", run / ".step_00000002.k1ll3d.old")
    shutil.copytree(run / "step_00000001", run / ".step_00000001.x7.old")  # killed after the second rename
    (run / ".step_00000003.y8.tmp").mkdir()
    # The best checkpoint's copy (<run>/best) is written the same way: killed mid-copy, and killed
    # between the renames of an overwrite (only the moved-aside previous best is left).
    (run / ".best.z9.tmp").mkdir()
    shutil.copytree(run / "step_00000001", run / ".best.w2.old")
    resumed = Trainer(tiny_cfg(data, run, "global_batch_size=4", "checkpoint_every_n_steps=1", "max_steps=2"))
    resumed.close()
    assert resumed.step == 2
    assert sorted(p.name for p in run.iterdir() if p.name.startswith((".step", "step", ".best", "best"))) == [
        "best", "step_00000001", "step_00000002"]


def test_metrics_history_has_no_duplicates_after_a_resume(data, tmp_path):
    run = tmp_path / "run"
    common = ("global_batch_size=4", "checkpoint_every_n_steps=2", "checkpoint_keep=0")
    first = Trainer(tiny_cfg(data, run, *common, "max_steps=3"))
    first.train()
    first.close()
    shutil.rmtree(run / "step_00000003")  # as if killed after logging step 3, before its checkpoint
    resumed = Trainer(tiny_cfg(data, run, *common, "max_steps=4"))
    resumed.train()
    resumed.close()
    log = read_jsonl(run)
    assert [r["step"] for r in log if "train/lm_loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in log if "num_params" in r] == [0]


# ----- a hung rank --------------------------------------------------------------------------------------

def test_a_hung_rank_ends_the_job_within_the_timeout(tmp_path):
    data = tmp_path / "data"
    write_tiny_dataset(data, num_tasks=4, augs_per_task=1, examples_per_puzzle=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv_backend=c10d",
           "--rdzv_endpoint=localhost:0", "--nnodes=1", str(REPO / "tests" / "hang_rank_worker.py"), str(data),
           str(tmp_path / "run"), "0.05"]  # 3 s
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    stopped_at, lines, pids = None, [], []

    def end_all():  # torchrun, then both ranks (one of them stopped), each in its own session
        for kill in [lambda: os.killpg(proc.pid, signal.SIGKILL)] + [lambda p=p: os.kill(p, signal.SIGKILL) for p in pids]:
            try:
                kill()
            except ProcessLookupError:
                pass

    watchdog = threading.Timer(120, end_all)  # on main there is no timeout: the job would hang
    watchdog.start()
    try:
        for line in proc.stderr:  # torchrun itself waits 30 s before it SIGKILLs the stopped rank
            lines.append(line)
            pids += [int(pid) for pid in re.findall(r"hang: rank \d pid (\d+)", line)]
            if "hang: rank 1 stops now" in line:  # (lines of the two ranks may interleave)
                stopped_at = time.monotonic()
            if "error: " in line:
                break
        took = time.monotonic() - stopped_at if stopped_at is not None else None
    finally:
        watchdog.cancel()
        end_all()
        proc.wait()
    assert lines and lines[-1].strip().endswith("error: rank 0: the other ranks did not answer within "
                                                "dist_timeout_minutes=0.05 (a rank hung or died); stopping the job")
    assert took is not None and took < 3 + 10, took  # the 3 s timeout plus slack for a busy machine
