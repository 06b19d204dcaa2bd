"""TRM + ACT wrapper + loss head on tiny CPU configs, checked against hand-worked or recomputed values."""

import dataclasses

import pytest
import torch

from models.config import ArchConfig
from models.losses import ACTLossHead
from models.registry import build_model, canonical_model_name, count_parameters
from models.trm import TRM, TRMInnerCarry

SEQ, VOCAB, IDS = 12, 12, 10


def tiny_arch(**overrides) -> ArchConfig:
    base = dict(hidden_size=32, num_heads=4, H_cycles=2, L_cycles=2, L_layers=2, halt_max_steps=4,
                puzzle_emb_ndim=32, puzzle_emb_len=2, forward_dtype="float32", halt_exploration_prob=0.0)
    base.update(overrides)
    return ArchConfig(**base)


def make_batch(batch_size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, VOCAB, (batch_size, SEQ), generator=g).to(torch.int32)
    labels[:, -3:] = -100
    return {"inputs": torch.randint(0, VOCAB, (batch_size, SEQ), generator=g).to(torch.int32), "labels": labels,
            "puzzle_identifiers": torch.randint(1, IDS, (batch_size,), generator=g).to(torch.int32)}


def build(arch, batch_size=4, seed=0) -> ACTLossHead:
    torch.manual_seed(seed)
    return build_model(arch, batch_size=batch_size, seq_len=SEQ, vocab_size=VOCAB, num_puzzle_identifiers=IDS)


def set_q_head(head, weight_scale=0.0, bias=-5.0, seed=0):
    with torch.no_grad():
        w = head.model.inner.q_head.weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)) * weight_scale)
        head.model.inner.q_head.bias.fill_(bias)


def test_default_arc_config_has_reference_parameter_count():
    head = build_model(ArchConfig(), batch_size=2, seq_len=900, vocab_size=12, num_puzzle_identifiers=3)
    h, inner = 512, 1536  # SwiGLU inner width for 512 x 4
    per_block = h * 3 * h + h * h + h * 2 * inner + inner * h
    expected = 2 * per_block + 12 * h + 12 * h + (2 * h + 2)  # blocks, embed_tokens, lm_head, q_head
    n = count_parameters(head)
    print(f"TRM ARC default: {n:,} dense parameters (reference 6.83M; puzzle table excluded)")
    assert n == expected and abs(n - 6.83e6) < 0.01e6
    assert head.model.puzzle_emb.weights.shape == (3, 512)


def test_shapes_dtypes_and_registry():
    head = build(tiny_arch())
    assert isinstance(head.model, TRM) and canonical_model_name("recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1") == "trm"
    with pytest.raises(ValueError, match="valid names: hrm, transformers_baseline, trm"):
        build(tiny_arch(name="nope"))
    batch = make_batch()
    carry = head.initial_carry(batch)
    carry, loss, metrics, preds, finished = head(carry, batch, return_keys=("preds", "logits", "q_halt_logits", "puzzle_identifiers"))
    assert carry.inner_carry.z_H.shape == (4, SEQ + 2, 32) and carry.inner_carry.z_H.dtype == torch.float32
    assert preds["logits"].shape == (4, SEQ, VOCAB) and preds["preds"].shape == (4, SEQ)
    assert preds["q_halt_logits"].dtype == torch.float32 and torch.equal(preds["puzzle_identifiers"], batch["puzzle_identifiers"])
    assert loss.ndim == 0 and set(metrics) == {"count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps",
                                              "lm_loss", "q_halt_loss", "q_continue_loss"}
    assert not finished  # first of halt_max_steps=4 steps, q_halt starts at -5


def test_same_seed_gives_identical_results_including_exploration():
    results = []
    for _ in range(2):
        head = build(tiny_arch(halt_exploration_prob=0.5))
        set_q_head(head, bias=5.0)
        batch, carry = make_batch(), None
        carry = head.initial_carry(batch)
        torch.manual_seed(123)
        losses, steps = [], []
        for _ in range(3):
            carry, loss, _, _, _ = head(carry, batch)
            losses.append(loss.item())
            steps.append(carry.steps.clone())
        results.append((losses, torch.stack(steps)))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])


def test_gradient_flows_only_through_the_last_outer_cycle():
    """A 3-cycle step must equal (values and gradients) a 1-cycle step started from the state that
    2 cycles reach, i.e. the first cycles act as a constant initial state."""
    arch3 = tiny_arch(H_cycles=3)
    head3 = build(arch3)
    head2 = build(dataclasses.replace(arch3, H_cycles=2))
    head1 = build(dataclasses.replace(arch3, H_cycles=1))
    head2.load_state_dict(head3.state_dict())
    head1.load_state_dict(head3.state_dict())
    batch = make_batch()
    table = torch.randn(IDS, 32)
    for head in (head3, head2, head1):
        head.model.inner.puzzle_emb.weights.copy_(table)
    start = head3.model.inner.reset_carry(torch.ones(4, dtype=torch.bool), head3.model.inner.empty_carry(4))

    def step(head, carry):
        head.zero_grad()
        _, logits, (q_halt, _) = head.model.inner(carry, batch)
        (logits.square().sum() + q_halt.sum()).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in head.named_parameters()}

    logits3, grads3 = step(head3, start)
    with torch.no_grad():
        after_two, _, _ = head2.model.inner(start, batch)
    logits1, grads1 = step(head1, after_two)
    torch.testing.assert_close(logits3, logits1, atol=1e-5, rtol=1e-5)
    assert set(grads3) == set(grads1) and all(g.abs().sum() > 0 for g in grads3.values())
    for name in grads3:
        torch.testing.assert_close(grads3[name], grads1[name], atol=1e-5, rtol=1e-4, msg=name)
    assert head3.model.inner.puzzle_emb.local_weights.grad.abs().sum() > 0
    new_carry, _, _ = head3.model.inner(start, batch)
    assert not new_carry.z_H.requires_grad and not new_carry.z_L.requires_grad  # carry is detached


def test_train_halting_by_q_head_by_max_steps_and_new_data_for_halted_rows():
    head = build(tiny_arch())
    head.train()
    batch_a, batch_b = make_batch(seed=1), make_batch(seed=2)
    set_q_head(head, bias=5.0)  # q_halt > 0 everywhere: halt after one step
    carry = head.initial_carry(batch_a)
    carry, _, metrics, _, finished = head(carry, batch_a)
    assert finished and carry.steps.tolist() == [1] * 4 and metrics["count"] == 4 and metrics["steps"] == 4

    set_q_head(head, bias=-5.0)  # never wants to halt: runs halt_max_steps, ignoring new batches
    carry = head.initial_carry(batch_a)
    for step in range(1, 5):
        carry, _, metrics, _, finished = head(carry, batch_a if step == 1 else batch_b)
        assert torch.equal(carry.current_data["inputs"], batch_a["inputs"])
        assert carry.steps.tolist() == [step] * 4 and bool(finished) == (step == 4)
    assert metrics["steps"] == 16
    carry, _, _, _, _ = head(carry, batch_b)  # halted rows restart on the new examples
    assert torch.equal(carry.current_data["inputs"], batch_b["inputs"]) and carry.steps.tolist() == [1] * 4


def test_exploration_delays_halting_to_a_random_step_in_range():
    head = build(tiny_arch(halt_max_steps=5, halt_exploration_prob=1.0), batch_size=64)
    set_q_head(head, bias=5.0)
    batch = make_batch(64)
    carry = head.initial_carry(batch)
    torch.manual_seed(0)
    halt_steps = torch.zeros(64, dtype=torch.int32)
    for _ in range(5):
        carry, _, _, _, _ = head(carry, batch)
        halt_steps = torch.where(carry.halted & (halt_steps == 0), carry.steps, halt_steps)
        carry.halted = carry.halted & (halt_steps == 0)  # keep halted rows out of later counts
    assert set(halt_steps.tolist()) == {2, 3, 4, 5}  # min steps ~ U{2..5}; never 1


def test_eval_runs_max_steps_unless_adaptive():
    arch = tiny_arch(halt_max_steps=4)
    head = build(arch)
    head.eval()
    set_q_head(head, bias=5.0)  # would halt at once in training
    batch = make_batch()
    carry = head.initial_carry(batch)
    with torch.no_grad():
        for step in range(1, 5):
            carry, _, _, _, finished = head(carry, batch)
            assert bool(finished) == (step == 4)


def test_adaptive_halting_freezes_halted_rows_and_matches_full_run():
    arch = tiny_arch(halt_max_steps=6, adaptive_halting=True)
    head = build(arch, batch_size=16)
    head.eval()
    set_q_head(head, weight_scale=3.0, bias=-2.0, seed=2)  # rows disagree on when to halt
    batch = make_batch(16)
    keys = ("logits", "q_halt_logits")

    with torch.no_grad():  # reference: the plain 6-step evaluation, outputs after every step
        head.model.arch = dataclasses.replace(arch, adaptive_halting=False)
        carry, full = head.initial_carry(batch), []
        for _ in range(6):
            carry, _, _, preds, _ = head(carry, batch, return_keys=keys)
            full.append(preds)

        head.model.arch = arch
        carry, halt_step, calls = head.initial_carry(batch), torch.zeros(16, dtype=torch.long), 0
        while True:
            carry, _, _, preds, finished = head(carry, batch, return_keys=keys)
            calls += 1
            halt_step = torch.where(carry.halted & (halt_step == 0), calls, halt_step)
            if finished:
                break
    print("adaptive halting steps per row:", halt_step.tolist())
    assert len(set(halt_step.tolist())) > 2 and calls == int(halt_step.max())  # mixed, stops at the last halt
    assert torch.equal(carry.steps.long(), halt_step)
    for row in range(16):  # each row's final output is the plain run's output at its halting step
        ref = full[halt_step[row] - 1]
        torch.testing.assert_close(preds["logits"][row], ref["logits"][row], atol=1e-5, rtol=1e-5)
        assert ref["q_halt_logits"][row] > 0 or halt_step[row] == 6


def test_q_learning_variant_bootstraps_continue_target():
    arch = tiny_arch(no_ACT_continue=False)
    head = build(arch)
    head.train()
    set_q_head(head, weight_scale=0.5, bias=0.0)
    batch = make_batch()
    new_carry, outputs = head.model(head.initial_carry(batch), batch)
    with torch.no_grad():
        expected_halt = (outputs["q_halt_logits"] > outputs["q_continue_logits"])
        _, _, (nh, nc) = head.model.inner(new_carry.inner_carry, batch)
        target = torch.sigmoid(torch.maximum(nh, nc))  # step 1 < halt_max_steps
    assert torch.equal(new_carry.halted, expected_halt)
    torch.testing.assert_close(outputs["target_q_continue"], target)
    _, loss, metrics, _, _ = head(head.initial_carry(batch), batch)
    assert metrics["q_continue_loss"] > 0
    loss.backward()


@pytest.mark.parametrize("overrides", [dict(mlp_t=True, pos_encodings="none"), dict(pos_encodings="learned"),
                                       dict(puzzle_emb_ndim=0), dict(puzzle_emb_ndim=0, puzzle_emb_len=0),
                                       dict(puzzle_emb_ndim=40, puzzle_emb_len=0)])
def test_variants_run_forward_and_backward(overrides):
    arch = tiny_arch(**overrides)
    head = build(arch)
    batch = make_batch()
    carry, loss, _, preds, _ = head(head.initial_carry(batch), batch, return_keys=("logits",))
    loss.backward()
    assert preds["logits"].shape == (4, SEQ, VOCAB) and torch.isfinite(loss)
    assert carry.inner_carry.z_H.shape[1] == SEQ + arch.prefix_len
    assert (head.model.puzzle_emb is None) == (arch.puzzle_emb_ndim == 0)
    assert all(p.grad is not None for n, p in head.named_parameters() if not n.endswith("q_head.weight"))


class _FixedModel(torch.nn.Module):
    """Stub ACT model returning given outputs, for hand-checking the loss head."""

    def __init__(self, logits, q_halt, halted, steps):
        super().__init__()
        self.out = dict(logits=logits, q_halt_logits=q_halt, q_continue_logits=torch.zeros_like(q_halt))
        self.halted, self.steps = halted, steps

    def forward(self, carry, batch):
        from models.trm import ACTCarry
        return ACTCarry(TRMInnerCarry(None, None), self.steps, self.halted, batch), dict(self.out)


def test_loss_head_hand_worked_example():
    # Two rows, 3 positions, vocab 2. Row 0: labels [1, 0, -100], predicted [1, 0] -> exact.
    # Row 1: labels [1, 1, 1], predicted [1, 0, 0] -> 1/3 correct. Row 1 not halted.
    logits = torch.tensor([[[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [3.0, 0.0], [1.0, 0.0]]])
    labels = torch.tensor([[1, 0, -100], [1, 1, 1]])
    q_halt = torch.tensor([0.5, 0.2])
    head = ACTLossHead(_FixedModel(logits, q_halt, torch.tensor([True, False]), torch.tensor([3, 2])), "softmax_cross_entropy")
    _, loss, m, preds, finished = head(None, {"labels": labels}, return_keys=("preds",))
    ce = lambda l, y: -torch.log_softmax(torch.tensor(l), -1)[y].item()  # noqa: E731
    lm_row0 = (ce([0.0, 2.0], 1) + ce([1.0, 0.0], 0)) / 2
    lm_row1 = (ce([0.0, 1.0], 1) + ce([3.0, 0.0], 1) + ce([1.0, 0.0], 1)) / 3
    bce = lambda x, y: -(y * torch.log(torch.sigmoid(torch.tensor(x))) + (1 - y) * torch.log(1 - torch.sigmoid(torch.tensor(x)))).item()  # noqa: E731
    q_loss = bce(0.5, 1.0) + bce(0.2, 0.0)
    assert abs(m["lm_loss"].item() - (lm_row0 + lm_row1)) < 1e-5 and abs(m["q_halt_loss"].item() - q_loss) < 1e-5
    assert abs(loss.item() - (lm_row0 + lm_row1 + 0.5 * q_loss)) < 1e-5
    assert (m["count"], m["exact_accuracy"], m["q_halt_accuracy"], m["steps"]) == (1, 1, 1, 3)
    assert abs(m["accuracy"].item() - 1.0) < 1e-6 and not finished
    assert preds["preds"].tolist() == [[1, 0, 0], [1, 0, 0]]
