"""HumanEval through the sandbox: the canonical solutions score pass@1 = 1.0, a body of `pass` scores 0.0."""

from __future__ import annotations

import json

import pytest

from strato_peft.cli import main
from strato_peft.eval.humaneval import load_problems, score


def test_reference_and_pass_bodies_on_a_subset():
    problems = load_problems()[:20]
    ref, _ = score(problems, [[p["canonical_solution"]] for p in problems])
    assert ref == {"pass@1": 1.0}
    empty, records = score(problems, [["    pass\n"] for p in problems])
    assert empty == {"pass@1": 0.0} and all(not r["passed"] for r in records)


def test_pass_at_10_needs_ten_samples():
    problems = load_problems()[:2]
    metrics, _ = score(problems, [[p["canonical_solution"]] * 4 + ["    pass\n"] * 4 for p in problems])
    assert metrics["pass@1"] == pytest.approx(0.5) and "pass@10" not in metrics
    metrics, _ = score(problems, [[p["canonical_solution"]] * 1 + ["    pass\n"] * 9 for p in problems])
    assert metrics["pass@1"] == pytest.approx(0.1) and metrics["pass@10"] == pytest.approx(1.0)


@pytest.mark.slow
def test_reference_cli_scores_all_164_canonical_solutions(tmp_path, capsys):
    code = main(["eval", "--tasks", "humaneval", "--reference", "--output-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "eval_results.json").read_text())["tasks"]["humaneval"]
    assert result["n"] == 164 and result["metrics"]["pass@1"] == 1.0
