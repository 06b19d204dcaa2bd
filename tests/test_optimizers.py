"""AdamATan2 against a float64 loop of the fused kernel's formula; schedule and EMA by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from training.ema import EMA
from training.optimizers import AdamATan2
from training.schedule import lr_at_step


def kernel_formula_float64(params, grads_per_step, lr, betas, wd):
    """The adam_atan2 CUDA kernel, element by element in float64 (independent of the implementation)."""
    b1, b2 = betas
    out = []
    for p0, grads in zip(params, zip(*grads_per_step)):
        p = p0.double().flatten().tolist()
        m, v = [0.0] * len(p), [0.0] * len(p)
        for step, g in enumerate(grads, start=1):
            g = g.double().flatten().tolist()
            bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
            for i in range(len(p)):
                p[i] *= 1 - lr * wd
                m[i] = b1 * m[i] + (1 - b1) * g[i]
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                p[i] -= (lr / bc1) * math.atan2(m[i], math.sqrt(v[i]) / math.sqrt(bc2))
        out.append(torch.tensor(p, dtype=torch.float64).view(p0.shape))
    return out


def lucidrains_variant_float64(params, grads_per_step, lr, betas, wd, a=1.27):
    """adam-atan2-pytorch's update: lr * a * atan2(m / bc1, sqrt(v / bc2))."""
    b1, b2 = betas
    out = []
    for p0, grads in zip(params, zip(*grads_per_step)):
        p, m, v = p0.double().clone(), torch.zeros_like(p0, dtype=torch.float64), torch.zeros_like(p0, dtype=torch.float64)
        for step, g in enumerate(grads, start=1):
            g = g.double()
            p *= 1 - lr * wd
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p -= lr * a * torch.atan2(m / (1 - b1 ** step), torch.sqrt(v / (1 - b2 ** step)))
        out.append(p)
    return out


def run_optimizer(params0, grads_per_step, lr, betas, wd):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = AdamATan2(params, lr=lr, betas=betas, weight_decay=wd, fused=False)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    return params, opt


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    params0 = [torch.randn(s, generator=gen) for s in shapes]
    # Gradients of mixed scales, exact zeros included (atan2(0, 0) = 0 must not become NaN).
    grads = [[torch.randn(s, generator=gen) * 10 ** float(torch.randint(-3, 2, ()).item()) for s in shapes]
             for _ in range(6)]
    grads[0][1][0] = 0.0
    return params0, grads


def test_matches_kernel_formula_in_float64(problem):
    params0, grads = problem
    lr, betas, wd = 3e-2, (0.9, 0.95), 0.1
    params, opt = run_optimizer(params0, grads, lr, betas, wd)
    expected = kernel_formula_float64(params0, grads, lr, betas, wd)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach().double(), e, rtol=0, atol=2e-6)
    assert all(float(opt.state[p]["step"]) == len(grads) for p in params)


def test_differs_from_adam_atan2_pytorch_variant(problem):
    params0, grads = problem
    lr, betas, wd = 3e-2, (0.9, 0.95), 0.1
    params, _ = run_optimizer(params0, grads, lr, betas, wd)
    variant = lucidrains_variant_float64(params0, grads, lr, betas, wd)
    moved_ours = torch.cat([(p.detach().double() - p0.double()).flatten() for p, p0 in zip(params, params0)])
    moved_variant = torch.cat([(v - p0.double()).flatten() for v, p0 in zip(variant, params0)])
    ratio = moved_variant.abs().sum() / moved_ours.abs().sum()
    assert ratio > 1.1  # the variant's larger steps (a = 1.27): learning rates do not transfer


def test_state_round_trip_and_skips_parameters_without_grad(problem):
    params0, grads = problem
    params, opt = run_optimizer(params0, grads[:3], 1e-2, (0.9, 0.95), 0.1)
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = AdamATan2(params2, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, fused=False)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if read back from a file
    for grads_now in grads[3:]:
        for ps in (params, params2):
            for p, g in zip(ps, grads_now):
                p.grad = g.clone()
        opt.step()
        opt2.step()
    for a, b in zip(params, params2):
        assert torch.equal(a, b)
    frozen = torch.nn.Parameter(torch.ones(3))
    AdamATan2([frozen], lr=1.0, weight_decay=0.5).step()  # no grad: neither update nor weight decay
    assert torch.equal(frozen.detach(), torch.ones(3))


def test_schedule_warmup_then_cosine_to_floor():
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=110)
    assert lr_at_step(0, **kw, min_ratio=0.1) == 0.0
    assert lr_at_step(5, **kw, min_ratio=0.1) == pytest.approx(0.5)
    assert lr_at_step(10, **kw, min_ratio=0.1) == pytest.approx(1.0)
    assert lr_at_step(60, **kw, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos = 0
    assert lr_at_step(110, **kw, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_at_step(60, **kw, min_ratio=1.0) == pytest.approx(1.0)  # the reference ARC setting: constant


def test_ema_averages_parameters_and_buffers_and_swaps_in_place():
    model = torch.nn.Linear(2, 1, bias=False)
    model.register_buffer("table", torch.zeros(2, 2))
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, rate=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.table.fill_(4.0)
    ema.update(model)  # 0.5 * old + 0.5 * new
    assert torch.equal(ema.shadow["weight"], torch.full((1, 2), 2.0))
    assert torch.equal(ema.shadow["table"], torch.full((2, 2), 2.0))
    weight_storage = model.weight.data_ptr()
    with ema.applied_to(model):
        assert torch.equal(model.weight.detach(), torch.full((1, 2), 2.0))
        assert model.weight.data_ptr() == weight_storage
    assert torch.equal(model.weight.detach(), torch.full((1, 2), 3.0))
    assert torch.equal(model.table, torch.full((2, 2), 4.0))
