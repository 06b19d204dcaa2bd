"""The ARC evaluator's default reproduces the reference evaluator (TRM evaluators/arc.py) exactly.

The reference is re-implemented here the slow, obvious way, from its description: crop each
prediction to the largest top-left rectangle of colour tokens (scanning rows), undo the copy's
augmentation (read from its identifier name), hash the grid with its shape, count votes and sum
sigmoid(q_halt) per (task, test input), sort by (votes, mean confidence) descending, score
pass@k per test input averaged over tasks, and submit the top 2 (padded with the first). An
empty crop is an answer like any other (``[]`` in the submission).
"""

import hashlib
import inspect
import json

import numpy as np
import pytest

from dataset.arc_grid import Augmentation, encode_grid
from evaluators.arc import ARCEvaluator
from tests.arc_eval_worker import Case, grid

PASS_KS = (1, 2, 5, 10)
# Reference numbering of the 8 dihedral transforms, and which one undoes each.
_FORWARD = [
    lambda g: g, lambda g: np.rot90(g, 1), lambda g: np.rot90(g, 2), lambda g: np.rot90(g, 3),
    np.fliplr, np.flipud, lambda g: g.T, lambda g: np.fliplr(np.rot90(g, 1)),
]
_UNDO = [0, 3, 2, 1, 4, 5, 6, 7]


def _ref_crop(tokens: np.ndarray) -> np.ndarray:
    g = np.asarray(tokens).reshape(30, 30)
    best_area, best = 0, (0, 0)
    num_c = 30
    for num_r in range(1, 31):
        for c in range(1, num_c + 1):
            if g[num_r - 1, c - 1] < 2 or g[num_r - 1, c - 1] > 11:
                num_c = c - 1
                break
        if num_r * num_c > best_area:
            best_area, best = num_r * num_c, (num_r, num_c)
    return (g[: best[0], : best[1]] - 2).astype(np.uint8)


def _ref_invert(name: str, g: np.ndarray) -> tuple[str, np.ndarray]:
    if "|||" not in name:
        return name, g
    task, t, digits = name.split("|||")
    colour_map = [int(d) for d in digits]
    inverse = np.zeros(10, np.uint8)
    for old, new in enumerate(colour_map):
        inverse[new] = old
    return task, np.ascontiguousarray(inverse[_FORWARD[_UNDO[int(t[1:])]](g)])


def _hash(g: np.ndarray) -> str:
    return hashlib.sha256(bytes(g.shape) + np.ascontiguousarray(g, np.uint8).tobytes()).hexdigest()


def reference_evaluation(case: Case) -> tuple[dict, dict]:
    """(metrics, submission) the way the reference evaluator computes them."""
    grids, votes = {}, {}
    for pid, inp, out, conf in case.rows:
        name = case.identifiers[pid]
        task, inp_grid = _ref_invert(name, _ref_crop(inp))
        _, pred = _ref_invert(name, _ref_crop(out))
        h = _hash(pred)
        grids[h] = pred
        votes.setdefault(task, {}).setdefault(_hash(inp_grid), []).append((h, 1 / (1 + np.exp(-np.log(conf / (1 - conf))))))
    correct = {k: 0.0 for k in PASS_KS}
    submission = {}
    for task, puzzle in case.test_puzzles.items():
        submission[task] = []
        hits = {k: 0 for k in PASS_KS}
        for pair in puzzle["test"]:
            counts = {}
            for h, q in votes.get(task, {}).get(_hash(np.array(pair["input"], np.uint8)), []):
                counts.setdefault(h, [0, 0.0])
                counts[h][0] += 1
                counts[h][1] += q
            ranked = sorted(((h, (n, s / n)) for h, (n, s) in counts.items()), key=lambda kv: kv[1], reverse=True)
            label = _hash(np.array(pair["output"], np.uint8))
            for k in PASS_KS:
                hits[k] += any(h == label for h, _ in ranked[:k])
            top = [grids[h] for h, _ in ranked[:2]]
            top += [top[0]] * (2 - len(top))
            submission[task].append({f"attempt_{i + 1}": g.tolist() for i, g in enumerate(top)})
        for k in PASS_KS:
            correct[k] += hits[k] / len(puzzle["test"])
    return {k: correct[k] / len(case.test_puzzles) for k in PASS_KS}, submission


def empty_decode_case(seed: int, empty_fraction: float = 0.3, n_tasks: int = 12) -> Case:
    """Tasks whose augmented copies vote for the right answer, wrong ones, or decode to nothing."""
    rng = np.random.default_rng(seed)
    case = Case()
    for t in range(n_tasks):
        n_test = 1 + (t % 3 == 0)
        tests = [(grid(3 + t % 5, 4 + j, 1000 * seed + 10 * t + j), grid(2 + j, 3 + t % 4, 500 + 10 * t + j))
                 for j in range(n_test)]
        case.add_task(f"task{t:02d}", tests)
        wrong = [grid(2, 2, 7000 + 10 * t + i) for i in range(3)]
        for j, (inp, out) in enumerate(tests):
            for _ in range(int(rng.integers(3, 12))):
                aug = Augmentation.random(rng)
                conf = float(rng.uniform(0.02, 0.98))
                pid = case.identifier(f"task{t:02d}", aug)
                r = rng.random()
                if r < empty_fraction:  # nothing decodable: all PAD, or an EOS / PAD in the corner
                    tokens = encode_grid(aug.apply(out))
                    tokens[0] = rng.choice([0, 1])
                    if rng.random() < 0.5:
                        tokens[:] = 0
                else:
                    answer = out if r < empty_fraction + 0.3 else wrong[int(rng.integers(0, 3))]
                    tokens = encode_grid(aug.apply(answer))
                    if rng.random() < 0.2:  # a stray EOS inside the grid: the crop keeps less of it
                        tokens[int(rng.integers(0, 60))] = 1
                case.rows.append((pid, encode_grid(aug.apply(inp)), tokens, conf))
    rng.shuffle(case.rows)
    return case


def _ours(case: Case, tmp_path, **kwargs):
    case.write(tmp_path / "data")
    ev = ARCEvaluator(str(tmp_path / "data"), None, case.identifiers, pass_Ks=PASS_KS, report=False,
                      flush_rows=7, **kwargs)
    ev.begin_eval()
    for batch, preds in case.batches(5):
        ev.update_batch(batch, preds)
    metrics = ev.result(str(tmp_path / "out"))
    return metrics, json.loads((tmp_path / "out" / "submission.json").read_text())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_reproduces_the_reference_with_empty_decodes(tmp_path, seed):
    case = empty_decode_case(seed)
    want_metrics, want_submission = reference_evaluation(case)
    metrics, submission = _ours(case, tmp_path)
    for k in PASS_KS:
        assert metrics[f"ARC/pass@{k}"] == pytest.approx(want_metrics[k]), k
    assert submission == want_submission
    assert any(e[a] == [] for entries in submission.values() for e in entries for a in e), \
        "the case must make an empty decode win somewhere"


def test_ignore_empty_predictions_drops_them_before_voting(tmp_path):
    case = Case()
    answer = grid(2, 3, 1)
    case.add_task("t", [(grid(3, 3, 2), answer)])
    case.predict("t", 0, answer, 0.9)
    for _ in range(2):  # two copies decode to nothing: the reference's winner is the empty grid
        case.rows.append((case.rows[0][0], case.rows[0][1], np.zeros(900, np.uint8), 0.5))
    ref_metrics, ref_submission = reference_evaluation(case)
    metrics, submission = _ours(case, tmp_path / "default")
    assert ref_metrics[1] == metrics["ARC/pass@1"] == 0.0 and metrics["ARC/pass@2"] == 1.0
    assert submission == ref_submission == {"t": [{"attempt_1": [], "attempt_2": answer.tolist()}]}
    metrics, submission = _ours(case, tmp_path / "ignore", ignore_empty_predictions=True)
    assert metrics["ARC/pass@1"] == 1.0 and metrics["ARC/empty_predictions"] == 2
    assert submission == {"t": [{"attempt_1": answer.tolist(), "attempt_2": answer.tolist()}]}


def test_ignore_empty_predictions_equals_the_reference_on_non_empty_copies(tmp_path):
    case = empty_decode_case(5)
    metrics, submission = _ours(case, tmp_path, ignore_empty_predictions=True)
    kept = Case(case.test_puzzles, case.identifiers, [r for r in case.rows if _ref_crop(r[2]).size])
    want_metrics, want_submission = reference_evaluation(kept)
    for k in PASS_KS:
        assert metrics[f"ARC/pass@{k}"] == pytest.approx(want_metrics[k]), k
    assert submission == want_submission


def test_option_is_off_by_default_and_on_in_the_kaggle_flow():
    from kaggle.run_kaggle import compose_config
    from training.config import EvaluatorConfig

    assert "ignore_empty_predictions" not in EvaluatorConfig(name="arc").build_kwargs()
    assert inspect.signature(ARCEvaluator).parameters["ignore_empty_predictions"].default is False
    cfg = compose_config("cfg_kaggle_lora", ["data_paths=[x]"])
    assert [e.build_kwargs().get("ignore_empty_predictions") for e in cfg.evaluators] == [True]
    cfg = compose_config("cfg_pretrain", ["data_paths=[x]"])
    assert all(e.build_kwargs().get("ignore_empty_predictions") is None for e in cfg.evaluators)
