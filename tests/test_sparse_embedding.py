"""Puzzle embedding table and its sparse sign-SGD, against a slow dense reference and across 2 ranks."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from models.sparse_embedding import CastedSparseEmbedding, SparseSignSGD


def _slow_sign_sgd(table, ids, grads, lr, wd):
    """Dense reference: per distinct id, sum its gradients, then decay and step by the sign."""
    table = table.clone().double()
    for row in sorted(set(ids.tolist())):
        g = sum(grads[i].double() for i in range(len(ids)) if ids[i] == row)
        table[row] = table[row] * (1 - lr * wd) - lr * torch.sign(g)
    return table


def test_train_forward_fills_local_copy_and_eval_reads_table():
    torch.manual_seed(0)
    emb = CastedSparseEmbedding(6, 4, batch_size=3, init_std=1.0)
    assert set(emb.state_dict()) == {"weights"}  # local copies are not saved
    ids = torch.tensor([5, 0, 5], dtype=torch.int32)
    out = emb(ids)
    assert out.requires_grad and torch.equal(out, emb.weights[[5, 0, 5]])
    assert torch.equal(emb.local_ids, ids)
    emb.eval()
    out = emb(ids.unsqueeze(-1), torch.bfloat16)
    assert not out.requires_grad and out.dtype == torch.bfloat16
    emb.train()
    emb.double()  # like .to(device): the per-batch copy must stay a leaf that receives gradients
    opt = SparseSignSGD(emb.buffers(), lr=0.5, weight_decay=0.0)
    emb(ids).sum().backward()
    assert emb.local_weights.is_leaf and emb.local_weights.grad is not None
    before = emb.weights.clone()
    opt.step()
    torch.testing.assert_close(emb.weights[[0, 5]], before[[0, 5]] - 0.5)
    with pytest.raises(ValueError, match="batch_size=3"):
        emb(torch.tensor([1, 2]))


def test_sign_sgd_matches_slow_reference_and_touches_only_used_rows():
    torch.manual_seed(0)
    emb = CastedSparseEmbedding(8, 5, batch_size=6, init_std=0.5)
    opt = SparseSignSGD(emb.buffers(), lr=0.05, weight_decay=0.3)
    before = emb.weights.clone()
    ids = torch.tensor([3, 1, 3, 7, 1, 3], dtype=torch.int32)
    target = torch.randn(6, 5)
    ((emb(ids) - target) ** 2).sum().backward()
    grads = emb.local_weights.grad.clone()
    opt.step()
    expected = _slow_sign_sgd(before, ids, grads, lr=0.05, wd=0.3)
    torch.testing.assert_close(emb.weights.double(), expected)
    untouched = [0, 2, 4, 5, 6]
    assert torch.equal(emb.weights[untouched], before[untouched])
    opt.zero_grad()
    assert emb.local_weights.grad is None or torch.count_nonzero(emb.local_weights.grad) == 0


_DIST_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    from models.sparse_embedding import CastedSparseEmbedding, SparseSignSGD
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # same table on both ranks
    emb = CastedSparseEmbedding(10, 4, batch_size=3, init_std=1.0)
    opt = SparseSignSGD(emb.buffers(), lr=0.1, weight_decay=0.5)
    ids = torch.tensor([[2, 5, 2], [5, 9, 0]][rank], dtype=torch.int32)
    gen = torch.Generator().manual_seed(100 + rank)
    upstream = torch.randn(3, 4, generator=gen)
    (emb(ids) * upstream).sum().backward()  # grad of local_weights = upstream
    opt.step()
    torch.save(emb.weights, sys.argv[2] + f"/rank{rank}.pt")
    dist.destroy_process_group()
""")


def test_sign_sgd_agrees_across_two_ranks(tmp_path):
    script = tmp_path / "dist_sign_sgd.py"
    script.write_text(_DIST_SCRIPT)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    str(script), repo, str(tmp_path)], check=True, env=env, timeout=120, capture_output=True)
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(w0, w1)
    # Independent: one process applying the update for both ranks' (ids, grads) at once.
    torch.manual_seed(0)
    table = CastedSparseEmbedding(10, 4, batch_size=3, init_std=1.0).weights
    ids = torch.tensor([2, 5, 2, 5, 9, 0])
    grads = torch.cat([torch.randn(3, 4, generator=torch.Generator().manual_seed(100 + r)) for r in (0, 1)])
    torch.testing.assert_close(w0.double(), _slow_sign_sgd(table, ids, grads, lr=0.1, wd=0.5))
