"""Code paths that only run on CUDA (bf16, torch.compile, fused AdamATan2, CUDA RNG, multi-GPU resume).

CPU tests simulate what they can: bf16 computed on CPU, torch.compile with the aot_eager backend,
a fake torch.cuda for the RNG checkpoint, a fake process group for the puzzle-table gather. Tests
marked ``gpu`` need a CUDA device (skipped without one, see conftest.py).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.distributed as dist

import models.sparse_embedding as sparse_embedding
import models.recursive_base as recursive_base
from models.config import ArchConfig
from models.layers import _DTYPES, resolve_forward_dtype
from models.registry import build_model
from training import state as st
from training.optimizers import AdamATan2

BATCH, SEQ, VOCAB, IDS = 4, 16, 12, 10


def tiny_head(name: str = "trm", forward_dtype: str = "bfloat16", seed: int = 0):
    arch = ArchConfig(name=name, hidden_size=64, num_heads=2, L_layers=1, H_layers=1, H_cycles=2, L_cycles=2,
                      puzzle_emb_ndim=64, puzzle_emb_len=1, halt_max_steps=3, forward_dtype=forward_dtype,
                      no_ACT_continue=name != "hrm")
    torch.manual_seed(seed)
    return build_model(arch, batch_size=BATCH, seq_len=SEQ, vocab_size=VOCAB, num_puzzle_identifiers=IDS)


def tiny_batch(device="cpu", seed: int = 0, batch: int = BATCH):
    g = torch.Generator().manual_seed(seed)
    data = {"inputs": torch.randint(0, VOCAB, (batch, SEQ), generator=g, dtype=torch.int32),
            "labels": torch.randint(0, VOCAB, (batch, SEQ), generator=g, dtype=torch.int32),
            "puzzle_identifiers": torch.randint(1, IDS, (batch,), generator=g, dtype=torch.int32)}
    return {k: v.to(device) for k, v in data.items()}


def train_step(head, call, batch, carry=None, seed: int = 0):
    """One ACT training step; (carry, loss, {name: grad}) with the puzzle rows' grad as 'local_weights'."""
    torch.manual_seed(seed)
    carry = head.initial_carry(batch) if carry is None else carry
    carry, loss, _, _, _ = call(carry=carry, batch=batch, return_keys=())
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in head.named_parameters()}
    local = head.model.puzzle_emb.local_weights
    grads["local_weights"] = local.grad.detach().clone()
    head.zero_grad(set_to_none=True)
    local.grad = None
    return carry, loss.detach(), grads


# ----------------------------------------------------------------------------- dtype choice under compile

def test_forward_dtype_choice_is_a_compile_time_constant():
    # Inside a compiled forward, torch.cuda.is_bf16_supported() is a graph break ("torch.* op returned
    # non-Tensor"); fullgraph=True turns that into an error. Reached on CPU by asking for a CUDA device.
    def cast(x):
        return x.to(resolve_forward_dtype("bfloat16", torch.device("cuda")))

    out = torch.compile(cast, fullgraph=True, backend="eager")(torch.ones(2))
    native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    assert out.dtype == (torch.bfloat16 if native else torch.float32)


def test_seal_precision_gives_fp16_on_gpus_with_only_emulated_bf16(monkeypatch):
    from seal.model import choose_precision

    # A T4: bf16 "supported" only by emulation (torch's default including_emulation=True says yes).
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    t4 = choose_precision("auto", torch.device("cuda", 0))
    assert (t4.weights, t4.autocast, t4.fp32_adapters) == (torch.float16, torch.float16, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert choose_precision("auto", torch.device("cuda", 0)).weights == torch.bfloat16


# ----------------------------------------------------------------------------- bf16 and compile, simulated on CPU

def _compute_in_requested_dtype(name, device):
    return _DTYPES[name]  # what a CUDA device with bf16 resolves to, here on CPU


@pytest.mark.parametrize("name", ["trm", "hrm", "transformers_baseline"])
def test_bf16_training_step_matches_float32(monkeypatch, name):
    fp32 = tiny_head(name, "float32")
    _, loss32, grads32 = train_step(fp32, fp32, tiny_batch())
    monkeypatch.setattr(recursive_base, "resolve_forward_dtype", _compute_in_requested_dtype)
    bf16 = tiny_head(name, "float32")  # same init; switch to bf16 compute after construction
    bf16.model.arch.forward_dtype = "bfloat16"
    carry, loss16, grads16 = train_step(bf16, bf16, tiny_batch())
    assert carry.inner_carry.z_H.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # fp32 master weights
    assert abs(loss16.item() - loss32.item()) < 0.02 * abs(loss32.item())
    for k, g in grads32.items():
        assert grads16[k].dtype == g.dtype == torch.float32, k
        assert torch.linalg.norm(grads16[k] - g) <= 0.1 * torch.linalg.norm(g) + 1e-6, k


def test_compiled_training_matches_eager_including_puzzle_rows():
    eager, compiled = tiny_head(forward_dtype="float32"), tiny_head(forward_dtype="float32")
    call = torch.compile(compiled, backend="aot_eager")
    carry_e = carry_c = None
    for step in range(3):  # carried latents and halting across steps
        batch = tiny_batch(seed=step)
        carry_e, loss_e, grads_e = train_step(eager, eager, batch, carry_e, seed=step)
        carry_c, loss_c, grads_c = train_step(compiled, call, batch, carry_c, seed=step)
        torch.testing.assert_close(loss_c, loss_e)
        for k in grads_e:
            torch.testing.assert_close(grads_c[k], grads_e[k], msg=k)
    compiled.eval()  # and evaluation with another batch size through the same compiled module
    with torch.inference_mode():
        batch = tiny_batch(seed=9, batch=6)
        carry = compiled.initial_carry(batch)
        for _ in range(3):
            carry, _, _, preds, done = call(carry=carry, batch=batch, return_keys=["preds"])
    assert bool(done) and preds["preds"].shape == (6, SEQ)


# ----------------------------------------------------------------------------- CUDA RNG in checkpoints

class FakeCuda:
    """torch.cuda's RNG functions for a node with ``count`` GPUs, this process on ``current``."""

    def __init__(self, monkeypatch, count: int, current: int, seed: int):
        self.count, self.current, self.restored = count, current, {}
        self.states = [torch.full((16,), seed * 100 + i, dtype=torch.uint8) for i in range(count)]
        for name in ("is_available", "is_initialized"):
            monkeypatch.setattr(torch.cuda, name, lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [self.get(i) for i in range(self.count)])
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: [self.set(s, i) for i, s in enumerate(states)])

    def _index(self, device):
        index = device if isinstance(device, int) else torch.device(device).index
        index = self.current if index is None else index
        if index >= self.count:
            raise IndexError(f"no GPU {index} on a node with {self.count}")
        return index

    def get(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set(self, state, device="cuda"):
        self.restored[self._index(device)] = state.clone()


def test_cuda_rng_state_resumes_on_a_node_with_fewer_gpus(monkeypatch):
    # Rank 1 of a 2-rank run on an 8-GPU node, resumed as rank 1 of a 2-rank run on a 2-GPU node.
    FakeCuda(monkeypatch, count=8, current=1, seed=1)
    saved = st.rng_state(torch.device("cuda", 1))
    expected = torch.full((16,), 101, dtype=torch.uint8)
    target = FakeCuda(monkeypatch, count=2, current=1, seed=2)
    st.set_rng_state(saved, torch.device("cuda", 1))
    assert list(target.restored) == [1] and torch.equal(target.restored[1], expected)


def test_cuda_rng_state_of_older_checkpoints_restores_own_device(monkeypatch):
    state = st.rng_state(torch.device("cpu"))
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]  # every visible GPU
    target = FakeCuda(monkeypatch, count=2, current=1, seed=0)
    st.set_rng_state(state, torch.device("cuda", 1))
    assert list(target.restored) == [1] and torch.equal(target.restored[1], state["cuda"][1])


# ----------------------------------------------------------------------------- puzzle-table gather

def test_puzzle_table_gather_avoids_the_deprecated_collective(monkeypatch):
    world = 3

    def gather_single(out, tensor, group=None, async_op=False):
        out.copy_(torch.cat([tensor + 10 * r for r in range(world)]))

    def deprecated(*args, **kwargs):
        raise AssertionError("all_gather_into_tensor is deprecated (FutureWarning) in torch 2.13")

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: world)
    monkeypatch.setattr(dist, "all_gather_single", gather_single, raising=False)
    monkeypatch.setattr(dist, "all_gather_into_tensor", deprecated)
    ids = torch.tensor([1, 2], dtype=torch.int32)
    gathered = sparse_embedding._gather_across_ranks(ids)
    assert gathered.tolist() == [1, 2, 11, 12, 21, 22]


# ----------------------------------------------------------------------------- EMA switched on at resume

def test_ema_switched_on_at_resume_starts_from_the_resumed_weights(tmp_path):
    from hydra import compose, initialize_config_dir

    from tests.dataset_fixtures import write_tiny_dataset
    from tests.test_pretrain import CONFIG_DIR, QUIET, SMALL_ARCH
    from training.config import to_pretrain_config
    from training.trainer import Trainer

    data, run = tmp_path / "data", tmp_path / "run"
    write_tiny_dataset(data, num_tasks=3, augs_per_task=1, examples_per_puzzle=2)

    def config(*extra):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="cfg_tiny_cpu", overrides=[f"data_paths=[{data}]", f"checkpoint_path={run}",
                                                                 *SMALL_ARCH, *QUIET, "max_steps=2", *extra])
        return to_pretrain_config(cfg)

    first = Trainer(config("ema=false"))
    first.train()
    first.close()
    resumed = Trainer(config("ema=true"))
    assert resumed.step == 2
    trained = resumed.head.state_dict()
    for k, v in resumed.ema.state_dict().items():
        torch.testing.assert_close(v, trained[k], msg=k)
    resumed.close()


# ----------------------------------------------------------------------------- real GPU checks

def _cuda_head(name="trm", forward_dtype="bfloat16"):
    return tiny_head(name, forward_dtype).cuda()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["trm", "hrm"])
def test_gpu_bf16_forward_matches_float32(name):
    fp32 = _cuda_head(name, "float32").eval()
    bf16 = copy.deepcopy(fp32)
    bf16.model.arch = dataclasses.replace(bf16.model.arch, forward_dtype="bfloat16")
    bf16.model.inner.arch = bf16.model.arch
    batch = tiny_batch("cuda")
    logits = {}  # per head: logits after each ACT step
    with torch.inference_mode():
        for label, head in (("fp32", fp32), ("bf16", bf16)):
            carry = head.initial_carry(batch)
            logits[label] = []
            for _ in range(head.model.arch.halt_max_steps):
                carry, _, _, preds, _ = head(carry=carry, batch=batch, return_keys=["logits"])
                logits[label].append(preds["logits"].float())
            logits[label + "_carry_dtype"] = carry.inner_carry.z_H.dtype
    assert logits["fp32_carry_dtype"] == torch.float32 and logits["bf16_carry_dtype"] == torch.bfloat16
    # One ACT step: bf16 rounding alone (8-bit mantissa, ~0.4% per op) stays within a few percent.
    first_ref, first_low = logits["fp32"][0], logits["bf16"][0]
    assert torch.linalg.norm(first_low - first_ref) <= 0.05 * torch.linalg.norm(first_ref)
    # After the whole rollout the bf16 carry has gone through every cycle of every step (HRM: 16 steps
    # x H2 x L2 x 4 layers), so the rounding compounds (measured on an H200: 6.8% for HRM, under 5% for
    # TRM); the predictions must still be the same tokens almost everywhere.
    ref, low = logits["fp32"][-1], logits["bf16"][-1]
    assert torch.linalg.norm(low - ref) <= 0.10 * torch.linalg.norm(ref)
    assert (low.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.95


@pytest.mark.gpu
def test_gpu_bf16_training_forward_has_no_graph_breaks():
    head = _cuda_head().train()
    batch = tiny_batch("cuda")
    explained = torch._dynamo.explain(head)(carry=head.initial_carry(batch), batch=batch, return_keys=())
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.gpu
def test_gpu_compiled_training_step_matches_eager():
    eager, compiled = _cuda_head(), _cuda_head()
    call = torch.compile(compiled)
    carry_e = carry_c = None
    for step in range(3):
        batch = tiny_batch("cuda", seed=step)
        carry_e, loss_e, grads_e = train_step(eager, eager, batch, carry_e, seed=step)
        carry_c, loss_c, grads_c = train_step(compiled, call, batch, carry_c, seed=step)
        torch.testing.assert_close(loss_c, loss_e, rtol=2e-2, atol=1e-2)
        for k in grads_e:
            assert torch.linalg.norm(grads_c[k] - grads_e[k]) <= 0.1 * torch.linalg.norm(grads_e[k]) + 1e-6, k


@pytest.mark.gpu
def test_gpu_fused_adam_atan2_equals_foreach_path():
    pytest.importorskip("adam_atan2_backend")
    torch.manual_seed(0)
    shapes = [(64, 32), (32,), (7, 5, 3)]
    params = [[torch.randn(s, device="cuda", requires_grad=True) for s in shapes] for _ in range(2)]
    with torch.no_grad():
        for a, b in zip(*params):
            b.copy_(a)
    opts = [AdamATan2(p, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, fused=f) for p, f in zip(params, (True, False))]
    for _ in range(5):
        grads = [torch.randn(s, device="cuda") for s in shapes]
        for group, opt in zip(params, opts):
            for p, g in zip(group, grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert opts[0].state[params[0][0]]["step"].device.type == "cuda"


@pytest.mark.gpu
def test_gpu_rng_state_round_trip():
    device = torch.device("cuda", torch.cuda.current_device())
    torch.rand(1, device=device)
    state = st.rng_state(device)
    first = torch.rand(8, device=device)
    st.set_rng_state(state, device)
    torch.testing.assert_close(torch.rand(8, device=device), first)


@pytest.mark.gpu
def test_gpu_puzzle_rows_are_a_leaf_on_the_device_and_get_gradients():
    head = _cuda_head().train()
    local = head.model.puzzle_emb.local_weights
    assert local.is_cuda and local.is_leaf and local.requires_grad
    _, _, grads = train_step(head, head, tiny_batch("cuda"))
    assert grads["local_weights"].is_cuda and grads["local_weights"].abs().sum() > 0


@pytest.mark.gpu
def test_gpu_flash_attention_matches_sdpa():
    from models import layers

    if layers._flash_attn_func is None or torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("flash-attn not installed or GPU older than Ampere")
    torch.manual_seed(0)
    attn = layers.Attention(64, 32, 2).cuda()
    x = torch.randn(2, 16, 64, device="cuda", dtype=torch.bfloat16)
    flash = attn(None, x)
    saved = layers._flash_attn_func
    try:
        layers._flash_attn_func = None
        sdpa = attn(None, x)
    finally:
        layers._flash_attn_func = saved
    torch.testing.assert_close(flash.float(), sdpa.float(), rtol=2e-2, atol=2e-2)
