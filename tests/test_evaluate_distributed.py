"""Evaluation split over 2 CPU ranks (torchrun, gloo) equals evaluation on 1 rank; evaluate.py end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "arc_eval_worker.py"


def _torchrun(nproc: int, out_dir: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), str(WORKER), str(out_dir)]
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out_dir)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_ranks_equal_one_rank(tmp_path):
    _torchrun(1, tmp_path)
    _torchrun(2, tmp_path)
    one, two = tmp_path / "ws1", tmp_path / "ws2"
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m1 == m2
    assert 0 < m1["ARC/pass@2"] < 1  # a non-trivial case
    assert (one / "submission.json").read_text() == (two / "submission.json").read_text()
    assert (one / "answers.json").read_text() == (two / "answers.json").read_text()


def _tiny_arch():
    from omegaconf import OmegaConf

    from models.config import ArchConfig

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ArchConfig), OmegaConf.load(ROOT / "config/arch/trm_tiny.yaml")))


def _tiny_checkpoint(folder: Path) -> Path:
    """A tiny dataset and a randomly initialised tiny-TRM checkpoint in our checkpoint layout."""
    import torch
    from omegaconf import OmegaConf

    from models.registry import build_model
    from tests.dataset_fixtures import write_tiny_dataset
    from training.checkpoint import save_checkpoint
    from training.config import EvaluatorConfig, PretrainConfig

    data = write_tiny_dataset(folder / "data", num_tasks=3, augs_per_task=2, test_examples=[1, 2, 1])
    arch = _tiny_arch()
    cfg = PretrainConfig(arch=arch, data_paths=[str(folder / "data")], global_batch_size=4, evaluators=[EvaluatorConfig(name="arc")])
    torch.manual_seed(0)
    head = build_model(arch, batch_size=4, seq_len=900, vocab_size=12, num_puzzle_identifiers=len(data.identifiers))
    return save_checkpoint(folder / "run", 5, model_state=head.state_dict(), train_state={"step": 5},
                           config_yaml=OmegaConf.to_yaml(OmegaConf.structured(cfg)), identifiers=data.identifiers)


def test_evaluate_py_two_ranks_equal_one_rank(tmp_path):
    _tiny_checkpoint(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = [f"checkpoint={tmp_path / 'run'}", "device=cpu"]
    for nproc in (1, 2):
        launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        cmd = [*launcher, str(ROOT / "evaluate.py"), *args, f"output_dir={tmp_path / f'out{nproc}'}"]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = tmp_path / "out1", tmp_path / "out2"
    for name in ("submission.json", "answers.json", "metrics.json"):
        assert (one / name).read_text() == (two / name).read_text(), name
    metrics = json.loads((one / "metrics.json").read_text())
    assert metrics["ARC/num_predictions"] == 3 * 4  # 4 test pairs x (original + 2 copies)
    submission = json.loads((one / "submission.json").read_text())
    assert [len(v) for v in submission.values()] == [1, 2, 1]
    assert "task001" in (one / "report.html").read_text()


def test_reference_format_checkpoint_gives_the_same_evaluation(tmp_path):
    """A reference state dict (torch.compile prefixes) + all_config.yaml evaluates like our checkpoint."""
    import torch
    import yaml

    from evaluate import EvaluateConfig, run_evaluation
    from models.compat import export_reference_state_dict
    from safetensors.torch import load_file

    ours = _tiny_checkpoint(tmp_path)
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    arch = yaml.safe_load((ROOT / "config/arch/trm_tiny.yaml").read_text())
    arch["name"] = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
    arch["loss"]["name"] = "losses@ACTLossHead"
    arch["some_fork_only_knob"] = True  # reference forks add keys: ignored with a note
    config = {"arch": arch, "data_paths": [str(tmp_path / "data")], "global_batch_size": 4, "epochs": 1, "eval_interval": 1,
              "evaluators": [{"name": "arc@ARC"}], "curriculum_min_depth": 2}
    (ref_dir / "all_config.yaml").write_text(yaml.safe_dump(config))
    from models.compat import load_reference_state_dict
    from models.registry import build_model

    head = build_model(_tiny_arch(), batch_size=4, seq_len=900, vocab_size=12, num_puzzle_identifiers=10)
    load_reference_state_dict(head, load_file(str(ours / "model.safetensors")))
    torch.save(export_reference_state_dict(head, compiled_prefix=True), ref_dir / "step_5")

    m_ours = run_evaluation(EvaluateConfig(checkpoint=str(ours), device="cpu", output_dir=str(tmp_path / "o1"), report=False))
    m_ref = run_evaluation(EvaluateConfig(checkpoint=str(ref_dir / "step_5"), device="cpu", output_dir=str(tmp_path / "o2"), report=False))
    assert {k: v for k, v in m_ours.items() if k.startswith("ARC/")} == {k: v for k, v in m_ref.items() if k.startswith("ARC/")}
    assert (tmp_path / "o1/submission.json").read_text() == (tmp_path / "o2/submission.json").read_text()
    assert (tmp_path / "o1/answers.json").read_text() == (tmp_path / "o2/answers.json").read_text()


def test_reference_layout_as_a_folder_or_a_hub_repo(tmp_path, monkeypatch):
    """Published reference checkpoints are a folder/repo with all_config.yaml and a bare step_<N> file:
    `checkpoint=<that folder>` and `checkpoint=org/repo` (offline cache) pick the newest step file."""
    from evaluate import EvaluateConfig, run_evaluation
    from tests.test_hub import build_cache

    test_reference_format_checkpoint_gives_the_same_evaluation(tmp_path)  # writes reference/{all_config.yaml,step_5}
    ref_dir = tmp_path / "reference"
    (ref_dir / "step_2").write_bytes(b"older weights: must not be picked")
    files = {p.name: p.read_bytes() for p in ref_dir.iterdir()}
    build_cache(tmp_path / "hf_cache", "org/trm-reference", "c" * 40, files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, checkpoint in (("o3", str(ref_dir)), ("o4", "org/trm-reference")):
        run_evaluation(EvaluateConfig(checkpoint=checkpoint, device="cpu", output_dir=str(tmp_path / name), report=False))
        assert (tmp_path / name / "submission.json").read_text() == (tmp_path / "o2/submission.json").read_text()
