"""Gradient accumulation, gradient norm / clipping / monitor, AdamW and the fp16 gradient scaler (issue 12).

Tiny one-layer width-32 TRM on CPU, as tests/test_pretrain.py; every expectation is computed
independently (a K=1 run, torch.nn.utils.clip_grad_norm_, torch.optim.AdamW, a run without a resume).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import pretrain
from models.sparse_embedding import SparseSignSGD
from tests.dataset_fixtures import write_tiny_dataset
from tests.test_pretrain import QUIET, SMALL_ARCH, compose_cfg, read_jsonl, tiny_cfg
from training.checkpoint import load_checkpoint
from training.grad_monitor import GradMonitor, group_of
from training.precision import Precision, parse_autocast, resolve_precision
from training.trainer import Trainer

TABLE = "model.inner.puzzle_emb.weights"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny"
    write_tiny_dataset(path, num_tasks=4, augs_per_task=1, examples_per_puzzle=2)
    return path


def _capture_gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Record, at each optimizer step, the dense gradients and the puzzle rows' summed gradients."""
    seen: dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in trainer.head.named_parameters()}
    for opt in trainer.optimizers:
        original = opt.step

        def step(*args, _opt=opt, _original=original, **kwargs):
            if isinstance(_opt, SparseSignSGD):
                ids, grads = _opt.local_gradients()
                table = torch.zeros(trainer.puzzle_emb.weights.shape, dtype=torch.float64)
                table.index_add_(0, ids.long(), grads.double())  # per-id sum, done independently here
                seen["puzzle_rows"] = table
            else:
                for group in _opt.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            seen[names[id(p)]] = p.grad.detach().clone()
            return _original(*args, **kwargs)

        opt.step = step
    return seen


def _first_step(data: Path, run: Path, *extra: str):
    trainer = Trainer(tiny_cfg(data, run, "global_batch_size=8", "lr=1e-2", "lr_warmup_steps=0",
                               "arch.halt_max_steps=4", *extra))
    grads = _capture_gradients(trainer)
    _, batch, gbs = next(iter(trainer.train_loader))
    before = {k: v.clone() for k, v in trainer.head.state_dict().items()}
    trainer.train_step(batch, gbs)
    after = {k: v.clone() for k, v in trainer.head.state_dict().items()}
    trainer.close()
    return trainer, before, after, grads


def test_accumulated_first_step_equals_the_unaccumulated_one(data, tmp_path):
    one, before1, after1, grads1 = _first_step(data, tmp_path / "k1")
    two, before2, after2, grads2 = _first_step(data, tmp_path / "k2", "gradient_accumulation_steps=2")
    assert isinstance(two.carry, list) and len(two.carry) == 2 and two.carry[0].steps.shape == (4,)
    assert two.puzzle_emb.local_weights.shape[0] == 4 and one.puzzle_emb.local_weights.shape[0] == 8
    for key in before1:
        torch.testing.assert_close(before2[key], before1[key], rtol=0, atol=0)  # same start
    assert grads1.keys() == grads2.keys() and "puzzle_rows" in grads1
    for key in grads1:
        torch.testing.assert_close(grads2[key], grads1[key], rtol=1e-5, atol=1e-7, msg=key)
    assert grads1["puzzle_rows"].abs().sum(-1).gt(0).sum() >= 2  # several rows were used
    for key in after1:
        torch.testing.assert_close(after2[key], after1[key], rtol=0, atol=1e-5, msg=key)
    assert not torch.equal(after1[TABLE], before1[TABLE])  # puzzle rows moved, identically in both runs


def test_accumulation_reuses_each_slots_carry(data, tmp_path):
    trainer = Trainer(tiny_cfg(data, tmp_path / "run", "global_batch_size=8", "gradient_accumulation_steps=2",
                               "arch.halt_max_steps=3", "arch.halt_exploration_prob=0"))
    loader = iter(trainer.train_loader)
    _, batch, gbs = next(loader)
    trainer.train_step(batch, gbs)
    first_data = [c.current_data["inputs"].clone() for c in trainer.carry]
    _, batch2, gbs = next(loader)
    trainer.train_step(batch2, gbs)
    trainer.close()
    # q_halt starts at sigmoid(-5): nobody halts before halt_max_steps, so each slot keeps its own rows.
    for slot, carry in enumerate(trainer.carry):
        assert torch.equal(carry.current_data["inputs"], first_data[slot])
        assert torch.equal(carry.current_data["inputs"], batch["inputs"][slot * 4:(slot + 1) * 4])
        assert carry.steps.tolist() == [2] * 4


def test_grad_monitor_matches_clip_grad_norm_and_names_a_disconnected_group():
    torch.manual_seed(0)
    model = nn.ModuleDict({"L_level": nn.Linear(4, 4), "lm_head": nn.Linear(4, 2), "orphan": nn.Linear(4, 4)})
    reference = nn.ModuleDict({k: nn.Linear(4, 4) if k != "lm_head" else nn.Linear(4, 2) for k in model})
    reference.load_state_dict(model.state_dict())
    warnings: list[str] = []
    monitor = GradMonitor(model.named_parameters, patience=3, clip_norm=0.05, warn=warnings.append)
    for step in range(5):
        x = torch.randn(8, 4)
        for m in (model, reference):
            for p in m.parameters():
                p.grad = None
            m["lm_head"](m["L_level"](x)).pow(2).sum().backward()  # "orphan" never reaches the loss
        expected = torch.nn.utils.clip_grad_norm_([p for p in reference.parameters() if p.grad is not None], 0.05)
        out = monitor.process([], per_group=True)
        assert out["train/grad_norm"] == pytest.approx(float(expected), rel=1e-6)
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            if q.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0, msg=name)
        assert out["train/grad_norm/orphan"] == 0.0 and out["train/grad_norm/L_level"] > 0
        assert len(warnings) == (1 if step >= 2 else 0)  # once, at the third consecutive zero step
    assert "'orphan'" in warnings[0] and "zero" in warnings[0]
    assert [group_of(n) for n in ("model.inner.embed_tokens.embedding_weight", "model.inner.L_level.layers.0.x",
                                  "model.inner.H_level.layers.1.w", "model.inner.q_head.bias",
                                  "model.inner.L_level.layers.0.qkv_proj.lora_A")] == \
        ["embeddings", "L_level", "H_level", "heads", "lora"]


def test_training_logs_grad_norm_every_step_and_groups_every_log_interval(data, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(tiny_cfg(data, run, "global_batch_size=4", "max_steps=4", "log_interval=2",
                               "grad_clip_norm=1e-3"))
    trainer.train()
    trainer.close()
    rows = [r for r in read_jsonl(run) if "train/lm_loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["train/grad_norm"] > 1e-3 for r in rows)
    grouped = [r["step"] for r in rows if "train/grad_norm/L_level" in r]
    assert grouped == [2, 4]
    assert {"train/grad_norm/embeddings", "train/grad_norm/heads", "train/grad_norm/puzzle_table"} <= set(rows[1])


def test_adamw_step_matches_torch_adamw(data, tmp_path):
    trainer, before, after, grads = _first_step(data, tmp_path / "adamw", "optimizer=adamw", "weight_decay=0.1",
                                                "beta1=0.8", "beta2=0.9")
    params = {n: nn.Parameter(before[n].clone()) for n in grads if n != "puzzle_rows"}
    reference = torch.optim.AdamW(params.values(), lr=1e-2, betas=(0.8, 0.9), weight_decay=0.1, eps=1e-8)
    for n, p in params.items():
        p.grad = grads[n]
    reference.step()
    for n, p in params.items():
        torch.testing.assert_close(after[n], p.detach(), rtol=0, atol=1e-7, msg=n)


def test_autocast_spellings():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [parse_autocast(v) for v in (None, True, False, "bf16", "fp16", "off", "True", "false")] == \
        [None, "true", "off", "bf16", "fp16", "off", "true", "off"]
    assert resolve_precision(None, cpu, "bfloat16") == ("float32", False)
    assert resolve_precision(None, cuda, "bfloat16") == ("bfloat16", False)  # today's CUDA default
    assert resolve_precision(True, cpu, "float16") == ("float16", False)  # true keeps arch.forward_dtype
    assert resolve_precision("fp16", cpu, "bfloat16") == ("float16", True)
    with pytest.raises(ValueError, match="autocast='fp8'"):
        parse_autocast("fp8")


def test_scaler_skips_overflowing_steps_and_halves_its_scale():
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1.0)
    precision = Precision(torch.device("cpu"), use_scaler=True)
    scale = precision.scaler.get_scale()
    precision.scale(p.sum()).backward()
    assert torch.equal(p.grad, torch.full((3,), scale))  # scaled by 65536 ...
    precision.unscale(opt)
    assert torch.equal(p.grad, torch.ones(3))  # ... and back before anyone reads it
    precision.step(opt)
    precision.update()
    assert torch.equal(p.detach(), torch.zeros(3))
    p.grad = torch.tensor([float("inf"), 0.0, 0.0])
    precision.step(opt)
    precision.update()
    assert torch.equal(p.detach(), torch.zeros(3)) and precision.scaler.get_scale() == scale / 2


def test_fp16_scaler_resume_is_bit_exact(data, tmp_path):
    # On CPU fp16 computes in float32 (models.layers.resolve_forward_dtype) but the scaler runs.
    common = ["global_batch_size=4", "epochs=20", "eval_interval=2", "arch.halt_max_steps=3", "autocast=fp16",
              "carry_on_resume=restore", "checkpoint_every_eval=false", "gradient_accumulation_steps=2"]
    base = [f"data_paths=[{data}]", *SMALL_ARCH, *QUIET, *common]
    pretrain.train(compose_cfg([*base, f"checkpoint_path={tmp_path / 'full'}", "max_steps=6"]))
    for steps in (3, 6):
        pretrain.train(compose_cfg([*base, f"checkpoint_path={tmp_path / 'split'}", f"max_steps={steps}"]))
    middle = load_checkpoint(tmp_path / "split" / "step_00000003").train_state
    assert middle["grad_scaler"]["scale"] == 65536.0 and len(middle["per_rank"][0]["carry"]) == 2
    full = load_checkpoint(tmp_path / "full" / "step_00000006").model_state
    split = load_checkpoint(tmp_path / "split" / "step_00000006").model_state
    for key in full:
        assert torch.equal(split[key], full[key]), key
    logs = [{r["step"]: r["train/lm_loss"] for r in read_jsonl(tmp_path / d) if "train/lm_loss" in r}
            for d in ("full", "split")]
    assert all(logs[1][s] == logs[0][s] for s in range(4, 7))
    json.dumps(middle["grad_scaler"])  # numbers only (the train state becomes safetensors + JSON)


def test_scaler_unscales_stashed_puzzle_rows_and_skips_on_their_overflow():
    from models.sparse_embedding import CastedSparseEmbedding

    emb = CastedSparseEmbedding(4, 2, batch_size=2)
    opt = SparseSignSGD(emb.buffers(), lr=0.5, weight_decay=0.0)
    precision = Precision(torch.device("cpu"), use_scaler=True)
    scale = precision.scaler.get_scale()
    for ids, sign in (([1, 2], 1.0), ([2, 3], -3.0)):  # row 2: +1 then -3 -> summed -2 -> moves up
        precision.scale((emb(torch.tensor(ids)) * sign).sum()).backward()
        if sign > 0:
            opt.stash_local_gradients()
    precision.unscale(opt)
    ids, grads = opt.local_gradients()
    assert ids.tolist() == [1, 2, 2, 3] and torch.equal(grads, torch.tensor([[1.0] * 2] * 2 + [[-3.0] * 2] * 2))
    precision.step(opt)
    precision.update()
    assert emb.weights[:, 0].tolist() == [0.0, -0.5, 0.5, 0.5]
    emb(torch.tensor([0, 1])).sum().mul(float("inf")).backward()  # overflow in a stashed micro-batch
    opt.stash_local_gradients()
    precision.scale(emb(torch.tensor([0, 1])).sum()).backward()
    precision.unscale(opt)
    precision.step(opt)
    precision.update()
    assert emb.weights[:, 0].tolist() == [0.0, -0.5, 0.5, 0.5] and precision.scaler.get_scale() == scale / 2
