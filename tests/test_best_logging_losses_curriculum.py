"""Best checkpoint, TensorBoard logger, extra loss terms and the depth curriculum (issue 12)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import pretrain
from models.losses import ACTLossHead
from tests.dataset_fixtures import write_tiny_dataset
from tests.test_pretrain import QUIET, SMALL_ARCH, compose_cfg, read_jsonl, tiny_cfg
from training.checkpoint import list_checkpoints, load_checkpoint
from training.curriculum import Curriculum, parse_schedule
from training.hub import resolve_checkpoint
from training.trainer import Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny"
    write_tiny_dataset(path, num_tasks=3, augs_per_task=1, examples_per_puzzle=2)
    return path


# ----- best checkpoint ---------------------------------------------------------------------------
def test_best_checkpoint_survives_rotation_and_loads(data, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(tiny_cfg(data, run, "global_batch_size=4", "epochs=4", "eval_interval=1", "checkpoint_keep=1",
                               "checkpoint_best_metric=ARC/pass@2", "checkpoint_best_mode=max"))
    scores = iter([0.1, 0.7, 0.3, 0.5])
    weights_at_eval = {}

    def scripted_evaluate():
        weights_at_eval[trainer.step] = {k: v.clone() for k, v in trainer.head.state_dict().items()}
        return {"ARC/pass@2": next(scores), "all/accuracy": 0.5}

    trainer.evaluate = scripted_evaluate
    trainer.train()
    trainer.close()
    steps = sorted(weights_at_eval)
    assert [s for s, _ in list_checkpoints(run)] == [steps[-1]]  # rotation kept only the newest step_*
    best = run / "best"
    assert json.loads((best / "metrics.json").read_text())["ARC/pass@2"] == 0.7
    assert json.loads((best / "best.json").read_text())["checkpoint"] == f"step_{steps[1]:08d}"
    saved = load_checkpoint(best).model_state
    for key, value in weights_at_eval[steps[1]].items():
        assert torch.equal(saved[key], value), key
    assert resolve_checkpoint(str(best)) == best
    from evaluate import EvaluateConfig, run_evaluation  # evaluate.py checkpoint=<run>/best

    metrics = run_evaluation(EvaluateConfig(checkpoint=str(best), device="cpu", report=False, halt_max_steps_eval=1,
                                            output_dir=str(tmp_path / "eval")))
    assert metrics and "ARC/pass@2" in metrics and (tmp_path / "eval" / "submission.json").is_file()
    # load_checkpoint=<run>/best starts a new run from those weights.
    other = Trainer(tiny_cfg(data, tmp_path / "other", "global_batch_size=4", f"load_checkpoint={best}"))
    for key, value in other.head.state_dict().items():
        assert torch.equal(value, saved[key]), key
    other.close()


def test_best_checkpoint_min_mode_and_resume_keeps_comparing(data, tmp_path):
    run = tmp_path / "run"
    common = ["global_batch_size=4", "epochs=4", "eval_interval=1", "checkpoint_best_metric=all/lm_loss",
              "checkpoint_best_mode=min"]
    values = iter([0.5, 0.9, 0.2, 0.4])
    for max_steps in (3, 6):  # the second launch resumes at step 3 and reads best/metrics.json back
        trainer = Trainer(tiny_cfg(data, run, *common, f"max_steps={max_steps}"))
        trainer.evaluate = lambda: {"all/lm_loss": next(values)}
        trainer.train()
        trainer.close()
    assert json.loads((run / "best" / "metrics.json").read_text())["all/lm_loss"] == 0.2


# ----- TensorBoard -------------------------------------------------------------------------------
def test_tensorboard_events_hold_the_same_metrics(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    trainer = Trainer(tiny_cfg(data, run, "global_batch_size=4", "max_steps=3",
                               "loggers=[console,jsonl,tensorboard]"))
    trainer.train()
    trainer.close()
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    jsonl = [r for r in read_jsonl(run) if "train/lm_loss" in r]
    scalars = events.Scalars("train/lm_loss")
    assert [e.step for e in scalars] == [r["step"] for r in jsonl] == [1, 2, 3]
    assert [e.value for e in scalars] == pytest.approx([r["train/lm_loss"] for r in jsonl], rel=1e-6)
    assert "train/grad_norm" in events.Tags()["scalars"]


def test_loggers_without_jsonl_write_no_metrics_file(data, tmp_path):
    trainer = Trainer(tiny_cfg(data, tmp_path / "run", "global_batch_size=4", "max_steps=1", "loggers=[console]"))
    trainer.train()
    trainer.close()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ----- loss terms --------------------------------------------------------------------------------
class _FixedModel(nn.Module):
    """Returns given logits / q_halt for a batch of 1 row x 3 cells, vocab 2 (softmax CE by hand)."""

    def __init__(self, logits, q_halt, inputs, labels):
        super().__init__()
        self.logits, self.q_halt = nn.Parameter(torch.tensor(logits)), nn.Parameter(torch.tensor(q_halt))
        self.data = {"inputs": torch.tensor(inputs), "labels": torch.tensor(labels)}

    def forward(self, carry, batch):
        new_carry = SimpleNamespace(current_data=self.data, halted=torch.tensor([True]), steps=torch.tensor([1]))
        return new_carry, {"logits": self.logits, "q_halt_logits": self.q_halt,
                           "q_continue_logits": torch.zeros(1)}


def _head(**weights):
    # Cells: label 1 (input 1: unchanged), label 0 (input 1: changed), ignored (-100).
    model = _FixedModel([[[0.0, math.log(3.0)], [math.log(3.0), 0.0], [0.0, 0.0]]], [0.5],
                        [[1, 1, 1]], [[1, 0, -100]])
    return ACTLossHead(model, "softmax_cross_entropy", **weights)


def test_loss_terms_against_hand_computed_values():
    ce = -math.log(3.0 / 4.0)  # both labelled cells: p(label) = 3 / (3 + 1)
    q_halt_bce = math.log1p(math.exp(-0.5))  # exact_accuracy 1 -> target 1: -log sigmoid(0.5)
    _, loss, metrics, _, _ = _head()(None, {})
    assert float(loss.detach()) == pytest.approx(2 * ce / 2 + 0.5 * q_halt_bce)
    assert "changed_cell_loss" not in metrics and "ponder_loss" not in metrics
    _, loss, metrics, _, _ = _head(changed_cell_weight=3.0, ponder_cost=0.2)(None, {})
    changed = (3.0 - 1.0) * ce / 2  # one changed cell weighted 3 instead of 1, row divisor 2 labels
    ponder = 0.2 * math.log1p(math.exp(-0.5))
    assert float(metrics["changed_cell_loss"]) == pytest.approx(changed)
    assert float(metrics["ponder_loss"]) == pytest.approx(ponder)
    assert float(loss.detach()) == pytest.approx(ce + 0.5 * q_halt_bce + changed + ponder)


def test_neutral_loss_weights_reproduce_the_reference_loss_bit_for_bit():
    torch.manual_seed(0)
    logits, q = torch.randn(4, 5, 6), torch.randn(4)
    labels = torch.randint(0, 6, (4, 5))
    labels[0, :2] = -100
    inputs = torch.randint(0, 6, (4, 5))
    model = _FixedModel(logits.tolist(), q.tolist(), inputs.tolist(), labels.tolist())
    carry = SimpleNamespace(current_data=model.data, halted=torch.ones(4, dtype=torch.bool),
                            steps=torch.ones(4, dtype=torch.int32))
    model.forward = lambda carry_in, batch: (carry, {"logits": model.logits, "q_halt_logits": model.q_halt,
                                                     "q_continue_logits": torch.zeros(4)})
    _, loss, _, _, _ = ACTLossHead(model, changed_cell_weight=1.0, ponder_cost=0.0)(None, {})
    # The reference formula, written out: per-row mean stablemax CE summed, + 0.5 BCE(q_halt, exact).
    from models.losses import stablemax_cross_entropy

    mask = labels != -100
    counts = mask.sum(-1).clamp_min(1).unsqueeze(-1)
    ref_lm = (stablemax_cross_entropy(logits, labels) / counts).sum()
    exact = ((logits.argmax(-1) == labels) | ~mask).all(-1)
    ref_q = torch.nn.functional.binary_cross_entropy_with_logits(q, exact.float(), reduction="sum")
    zero = torch.zeros((), dtype=ref_q.dtype)
    assert torch.equal(loss.detach(), ref_lm + 0.5 * (ref_q + zero))


def test_loss_terms_are_logged_during_training(data, tmp_path):
    trainer = Trainer(tiny_cfg(data, tmp_path / "run", "global_batch_size=4", "max_steps=2",
                               "arch.loss.changed_cell_weight=2.0", "arch.loss.ponder_cost=0.01"))
    trainer.train()
    trainer.close()
    rows = [r for r in read_jsonl(tmp_path / "run") if "train/lm_loss" in r]
    assert all(r["train/changed_cell_loss"] > 0 and r["train/ponder_loss"] > 0 for r in rows)


# ----- depth curriculum --------------------------------------------------------------------------
def test_schedule_parsing_and_depth_by_step():
    arch = SimpleNamespace(H_cycles=3, L_cycles=4)
    curriculum = Curriculum([{"until_fraction": 0.25, "H_cycles": 1, "L_cycles": 1},
                             {"until_step": 6, "H_cycles": 2, "L_cycles": 2}], arch, total_steps=12)
    assert [curriculum.depth_at(s) for s in range(8)] == [(1, 1)] * 3 + [(2, 2)] * 3 + [(3, 4)] * 2
    for bad, match in (([{"H_cycles": 1, "L_cycles": 1}], "exactly one"),
                       ([{"until_step": 3, "H_cycles": 0, "L_cycles": 1}], "H_cycles"),
                       ([{"until_step": 3, "H_cycles": 1, "L_cycles": 1, "depth": 2}], "unknown keys")):
        with pytest.raises(ValueError, match=r"arch_schedule\[0\]"):
            parse_schedule(bad)
        with pytest.raises(ValueError, match=match):
            parse_schedule(bad)


def test_curriculum_trains_shallow_first_evaluates_full_and_resumes_exactly(data, tmp_path):
    schedule = "arch_schedule=[{until_step:4,H_cycles:1,L_cycles:1}]"
    common = ["global_batch_size=4", "epochs=20", "eval_interval=2", "arch.halt_max_steps=3", "arch.H_cycles=2",
              "arch.L_cycles=2", "carry_on_resume=restore", "checkpoint_every_eval=false", schedule]
    base = [f"data_paths=[{data}]", *SMALL_ARCH, *QUIET, *common]
    base = [x for x in base if x not in ("arch.H_cycles=1", "arch.L_cycles=1")]
    trainer = Trainer(tiny_cfg(data, tmp_path / "depths", *common, "max_steps=6"))
    seen, original = [], trainer.train_model

    def spy(**kwargs):
        seen.append((trainer.head.model.inner.arch.H_cycles, trainer.head.model.inner.arch.L_cycles))
        return original(**kwargs)

    trainer.train_model = spy
    for _ in range(6):
        _, batch, gbs = next(iter(trainer.train_loader))
        trainer.train_step(batch, gbs)
    trainer.evaluate()
    assert seen == [(1, 1)] * 4 + [(2, 2)] * 2
    assert trainer.head.model.arch.H_cycles == 2  # evaluation ran at full depth
    trainer.close()
    pretrain.train(compose_cfg([*base, f"checkpoint_path={tmp_path / 'full'}", "max_steps=6"]))
    for steps in (3, 6):  # resumes inside the shallow stage and crosses into full depth
        pretrain.train(compose_cfg([*base, f"checkpoint_path={tmp_path / 'split'}", f"max_steps={steps}"]))
    full = load_checkpoint(tmp_path / "full" / "step_00000006").model_state
    split = load_checkpoint(tmp_path / "split" / "step_00000006").model_state
    for key in full:
        assert torch.equal(split[key], full[key]), key
    assert "H_cycles: 2" in (tmp_path / "split" / "step_00000006" / "config.yaml").read_text()


def test_compiled_graphs_are_kept_per_depth():
    """torch.compile traces once per (H_cycles, L_cycles) and reuses the graph when a depth comes back."""
    from models.config import ArchConfig
    from models.registry import build_model
    from training.curriculum import set_depth

    arch = ArchConfig(hidden_size=32, num_heads=2, L_layers=1, H_cycles=2, L_cycles=2, puzzle_emb_ndim=32,
                      puzzle_emb_len=1, forward_dtype="float32", halt_max_steps=2)
    head = build_model(arch, batch_size=2, seq_len=16, vocab_size=12, num_puzzle_identifiers=3)
    graphs: list[int] = []

    def counting_backend(gm, example_inputs):  # no code generation: only counts the traced graphs
        graphs.append(1)
        return gm.forward

    torch._dynamo.reset()
    model = torch.compile(head, backend=counting_backend)
    batch = {"inputs": torch.randint(0, 12, (2, 16)), "labels": torch.randint(0, 12, (2, 16)),
             "puzzle_identifiers": torch.tensor([1, 2])}
    counts = []
    for depth in ((1, 1), (2, 2), (1, 1), (2, 2)):
        set_depth(head, *depth)
        model(carry=head.initial_carry(batch), batch=batch, return_keys=())
        counts.append(len(graphs))
    torch._dynamo.reset()
    assert counts == [1, 2, 2, 2]
