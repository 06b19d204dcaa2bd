"""ARC evaluator on hand-built predictions whose right answers and scores are worked out by hand."""

import json

import numpy as np
import pytest

from dataset.arc_grid import Augmentation, decode_grid, encode_grid
from evaluators.arc import ARCEvaluator
from evaluators.registry import build_evaluator
from evaluators.submission import score_submission, solutions_from_test_puzzles
from evaluators.voting import canonicalise_tokens, canvas_to_grid
from tests.arc_eval_worker import Case, grid, mixed_case


def run(case: Case, tmp_path, batch_size=4, save=True, **kwargs):
    case.write(tmp_path / "data")
    ev = ARCEvaluator(str(tmp_path / "data"), None, case.identifiers, **kwargs)
    ev.begin_eval()
    for batch, preds in case.batches(batch_size):
        ev.update_batch(batch, preds)
    metrics = ev.result(str(tmp_path / "out") if save else None)
    return ev, metrics


def test_canonicalise_matches_slow_inverse_for_every_transform():
    rng = np.random.default_rng(1)
    tokens, transforms, luts, expected = [], [], [], []
    for tid in range(8):
        for _ in range(6):
            g = rng.integers(0, 10, size=(rng.integers(1, 31), rng.integers(1, 31))).astype(np.uint8)
            aug = Augmentation(tid, Augmentation.random(rng).colour_map)
            tok = encode_grid(aug.apply(g))
            tokens.append(tok)
            transforms.append(tid)
            luts.append(np.argsort(aug.colour_map))
            expected.append(aug.invert(decode_grid(tok)))  # slow path: the reference crop + invert
    canvases = canonicalise_tokens(np.stack(tokens).astype(np.int32), np.array(transforms), np.stack(luts))
    for canvas, want in zip(canvases, expected):
        np.testing.assert_array_equal(canvas_to_grid(canvas), want)


def test_inverse_mapping_recovers_answer_through_all_8_transforms_and_colour_maps(tmp_path):
    rng = np.random.default_rng(0)
    case = Case()
    answer = grid(3, 5, 1)  # non-square, so transposes and rotations must be undone
    case.add_task("t", [(grid(4, 2, 2), answer)])
    for tid in range(8):
        case.predict("t", 0, answer, 0.5, Augmentation(tid, Augmentation.random(rng).colour_map))
    ev, metrics = run(case, tmp_path)
    ranked = ev.last_result.answers["t"][0]
    assert len(ranked) == 1 and ranked[0][1] == 8
    np.testing.assert_array_equal(ranked[0][0], answer)
    assert metrics["ARC/pass@1"] == 1.0 and metrics["ARC/num_predictions"] == 8


def test_votes_then_confidence_order(tmp_path):
    case = Case()
    a, b, c = grid(2, 2, 1), grid(2, 2, 2), grid(3, 3, 3)
    case.add_task("t", [(grid(3, 3, 9), b)])
    for ans, conf in [(a, 0.9), (a, 0.7), (b, 0.6), (b, 0.2), (c, 0.99)]:  # a and b: 2 votes; a's mean conf higher
        case.predict("t", 0, ans, conf)
    ev, metrics = run(case, tmp_path)
    ranked = ev.last_result.answers["t"][0]
    assert [r[1] for r in ranked] == [2, 2, 1]
    np.testing.assert_array_equal(ranked[0][0], a)
    np.testing.assert_array_equal(ranked[1][0], b)
    assert ranked[0][2] == pytest.approx(0.8) and ranked[1][2] == pytest.approx(0.4)
    assert metrics["ARC/pass@1"] == 0.0 and metrics["ARC/pass@2"] == 1.0


def _pass_at_k_case() -> Case:
    """A: right answer ranked 2nd; B: 6th; C: never; D (two inputs): 1st and 3rd."""
    case = Case()
    wrong = [grid(2, 2, 50 + i) for i in range(8)]

    def ranked_votes(task, j, right, right_rank):
        # wrong[i] gets 20 - i votes-worth of rank; the right answer slots in at right_rank.
        order = wrong[:right_rank] + [right] if right is not None else wrong[:6]
        for position, ans in enumerate(order):
            for _ in range(10 - position):
                case.predict(task, j, ans, 0.5)

    for task in "ABC":
        case.add_task(task, [(grid(3, 3, ord(task)), grid(4, 4, ord(task)))])
    case.add_task("D", [(grid(3, 3, 1), grid(4, 4, 2)), (grid(3, 3, 3), grid(4, 4, 4))])
    ranked_votes("A", 0, grid(4, 4, ord("A")), 1)
    ranked_votes("B", 0, grid(4, 4, ord("B")), 5)
    ranked_votes("C", 0, None, 0)
    ranked_votes("D", 0, grid(4, 4, 2), 0)
    ranked_votes("D", 1, grid(4, 4, 4), 2)
    return case


def test_pass_at_k_worked_by_hand(tmp_path):
    _, m = run(_pass_at_k_case(), tmp_path)
    # per-task fractions: k=1: D .5 -> .5/4; k=2: A 1 + D .5; k=5: A, D; k>=10: A, B, D
    expected = {1: 0.125, 2: 0.375, 5: 0.5, 10: 0.75, 100: 0.75, 1000: 0.75}
    strict = {1: 0.0, 2: 0.25, 5: 0.5, 10: 0.75, 100: 0.75, 1000: 0.75}
    for k in expected:
        assert m[f"ARC/pass@{k}"] == pytest.approx(expected[k]), k
        assert m[f"ARC/strict_pass@{k}"] == pytest.approx(strict[k]), k


def test_several_test_inputs_fractional_and_strict(tmp_path):
    case = Case()
    case.add_task("two", [(grid(3, 3, 1), grid(2, 2, 1)), (grid(3, 3, 2), grid(2, 2, 2))])
    case.add_task("one", [(grid(3, 3, 3), grid(2, 2, 3))])
    case.predict("two", 0, grid(2, 2, 1), 0.5)  # right
    case.predict("two", 1, grid(2, 2, 9), 0.5)  # wrong
    case.predict("one", 0, grid(2, 2, 3), 0.5)  # right
    _, m = run(case, tmp_path)
    assert m["ARC/pass@2"] == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert m["ARC/strict_pass@2"] == pytest.approx(0.5)


def test_submission_matches_pass_at_2_and_has_every_task(tmp_path):
    case = mixed_case(3)
    ev, m = run(case, tmp_path)
    submission = json.loads((tmp_path / "out" / "submission.json").read_text())
    assert list(submission) == list(case.test_puzzles)  # every task, file order
    for task_id, task in case.test_puzzles.items():
        assert len(submission[task_id]) == len(task["test"])
        for entry in submission[task_id]:
            assert set(entry) == {"attempt_1", "attempt_2"}
    assert submission["no_predictions"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    solutions = solutions_from_test_puzzles(case.test_puzzles)
    assert score_submission(submission, solutions) == pytest.approx(m["ARC/pass@2"])
    # The top-2 of answers.json are the submission's attempts.
    answers = json.loads((tmp_path / "out" / "answers.json").read_text())
    top = answers["task0"][0]["answers"]
    assert submission["task0"][0]["attempt_1"] == top[0]["grid"]


def test_each_evaluation_votes_only_over_its_own_predictions(tmp_path):
    case = Case()
    right, wrong = grid(2, 2, 1), grid(2, 2, 2)
    case.add_task("t", [(grid(3, 3, 3), right)])
    case.write(tmp_path)
    case.identifier("t", Augmentation.identity())
    ev = ARCEvaluator(str(tmp_path), None, case.identifiers)
    for answer, votes, want in [(wrong, 3, 0.0), (right, 1, 1.0)]:
        case.rows = []
        for _ in range(votes):
            case.predict("t", 0, answer, 0.5)
        ev.begin_eval()
        for batch, preds in case.batches(2):
            ev.update_batch(batch, preds)
        assert ev.result()["ARC/pass@1"] == want


@pytest.mark.parametrize("ignore_empty", [False, True])
def test_padding_and_unmatched_are_not_votes_empty_ones_are_unless_ignored(tmp_path, ignore_empty):
    case = Case()
    case.add_task("t", [(grid(3, 3, 3), grid(2, 2, 1))])
    case.predict("t", 0, grid(2, 2, 1), 0.5)
    case.rows.append((case.rows[0][0], encode_grid(grid(5, 5, 4)), encode_grid(grid(2, 2, 9)), 0.9))  # unknown input
    case.rows.append((case.rows[0][0], case.rows[0][1], np.zeros(900, np.uint8), 0.9))  # nothing decodable
    case.write(tmp_path)
    ev = ARCEvaluator(str(tmp_path), None, case.identifiers, ignore_empty_predictions=ignore_empty)
    for batch, preds in case.batches(4, pad_to=6):  # two blank padding rows
        ev.update_batch(batch, preds)
    m = ev.result()
    assert m["ARC/num_predictions"] == 3 and m["ARC/unmatched_predictions"] == 1 and m["ARC/empty_predictions"] == 1
    ranked = ev.last_result.answers["t"][0]
    if ignore_empty:
        assert len(ranked) == 1 and ranked[0][1] == 1 and m["ARC/pass@1"] == 1.0
    else:  # the reference votes the empty grid like any answer; its confidence 0.9 ranks it first
        assert [g.shape for g, _, _ in ranked] == [(0, 0), (2, 2)] and m["ARC/pass@1"] == 0.0
        assert m["ARC/pass@2"] == 1.0


def test_flushing_in_pieces_equals_one_flush(tmp_path):
    case = mixed_case(5)
    ev_a, m_a = run(case, tmp_path / "a", flush_rows=3)
    ev_b, m_b = run(case, tmp_path / "b", flush_rows=10**6)
    assert m_a == m_b
    assert (tmp_path / "a/out/submission.json").read_text() == (tmp_path / "b/out/submission.json").read_text()


def test_tasks_without_solutions_are_not_scored_but_submitted(tmp_path):
    case = Case()
    case.add_task("hidden", [(grid(3, 3, 3), None)])
    case.predict("hidden", 0, grid(2, 2, 1), 0.5)
    ev, m = run(case, tmp_path)
    assert "ARC/pass@2" not in m and m["ARC/num_scored_tasks"] == 0
    submission = json.loads((tmp_path / "out" / "submission.json").read_text())
    assert submission["hidden"][0]["attempt_1"] == grid(2, 2, 1).tolist()


def test_registry_aliases_and_unknown_names(tmp_path):
    case = Case()
    case.add_task("t", [(grid(3, 3, 3), grid(2, 2, 1))])
    case.write(tmp_path)
    assert isinstance(build_evaluator("arc@ARC", str(tmp_path), None, case.identifiers), ARCEvaluator)
    # The trainer's EvaluatorConfig knobs (reference names) are accepted.
    ev = build_evaluator("arc", str(tmp_path), None, case.identifiers, submission_K=2, pass_Ks=[1, 2], aggregated_voting=True)
    assert sorted(k for k in ev.result() if "pass@" in k) == ["ARC/pass@1", "ARC/pass@2", "ARC/strict_pass@1", "ARC/strict_pass@2"]
    with pytest.raises(ValueError, match="valid names: arc"):
        build_evaluator("nope", str(tmp_path), None, case.identifiers)


def test_oracle_predictions_through_the_real_loader_score_one(tmp_path):
    """Labels fed back as predictions (every copy right) must give pass@1 = 1 for every task."""
    import torch

    from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
    from tests.dataset_fixtures import write_tiny_dataset

    write_tiny_dataset(tmp_path, num_tasks=3, augs_per_task=4, test_examples=[1, 2, 1])
    loader = PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[str(tmp_path)], global_batch_size=4, test_set_mode=True), "test")
    ev = build_evaluator("arc", str(tmp_path), loader.metadata, loader.identifiers)
    ev.begin_eval()
    for _, batch, _ in loader:
        oracle = batch["labels"].clamp(min=0)  # ignored positions (-100) -> PAD
        ev.update_batch(batch, {"preds": oracle, "q_halt_logits": torch.zeros(len(oracle))})
    m = ev.result(None)
    assert m["ARC/pass@1"] == 1.0 and m["ARC/strict_pass@1"] == 1.0
    assert m["ARC/num_predictions"] == 5 * 4 and m["ARC/unmatched_predictions"] == 0
    for task_id, per_input in ev.last_result.answers.items():
        assert all(ranked[0][1] == 5 for ranked in per_input)  # all 5 copies agree after inversion


def test_an_evaluation_without_any_prediction_still_submits_every_task(tmp_path):
    case = Case()
    case.add_task("a", [(grid(3, 3, 1), grid(2, 2, 1)), (grid(3, 3, 2), grid(2, 2, 2))])
    ev, m = run(case, tmp_path)
    assert m["ARC/pass@2"] == 0.0 and m["ARC/num_predictions"] == 0
    submission = json.loads((tmp_path / "out" / "submission.json").read_text())
    assert submission == {"a": [{"attempt_1": [[0]], "attempt_2": [[0]]}] * 2}


@pytest.mark.parametrize("bad", ["t|||t9|||0123456789", "t|||t1|||0113456789", "t|||x1|||0123456789"])
def test_malformed_identifiers_are_reported(tmp_path, bad):
    case = Case()
    case.add_task("t", [(grid(3, 3, 1), grid(2, 2, 1))])
    case.predict("t", 0, grid(2, 2, 1), 0.5)
    case.identifiers[1] = bad
    with pytest.raises(ValueError, match="identifier"):
        run(case, tmp_path)


def test_unknown_tasks_and_plain_names_parse(tmp_path):
    case = Case()
    case.add_task("t", [(grid(3, 3, 1), grid(2, 2, 1))])
    case.predict("t", 0, grid(2, 2, 1), 0.5)  # identity copy: the bare task id
    case.predict("t", 0, grid(2, 2, 1), 0.5, Augmentation(5, (0, 9, 8, 7, 6, 5, 4, 3, 2, 1)))
    case.rows.append((len(case.identifiers), *case.rows[0][1:]))
    case.identifiers.append("other|||t2|||0987654321")  # a task not in test_puzzles: unmatched
    _, m = run(case, tmp_path)
    assert m["ARC/pass@1"] == 1.0 and m["ARC/num_predictions"] == 3 and m["ARC/unmatched_predictions"] == 1
