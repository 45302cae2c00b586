"""`strato compare`: run collection, seed statistics against numpy/scipy, verdict thresholds, outputs, CLI contract.

Fast: every result folder is synthetic JSON written into tmp_path; no model is loaded.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from scipy import stats as sps

from strato_peft.cli import main
from strato_peft.experiments import build_comparison, collect_runs, write_outputs
from strato_peft.experiments.collect import split_run_name
from strato_peft.experiments.metric import metric_spec
from strato_peft.experiments.stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, paired_call, paired_comparison,
                                          seeds_to_call, wilcoxon_p)
from strato_peft.experiments.verdicts import (ACCURACY_DROP_MAX, FLOPS_RATIO_MAX, PARAMS_RATIO_MAX,
                                              STABILITY_STD_MAX, accuracy_guardrail, efficiency, stability)

REPO = Path(__file__).resolve().parents[1]
ACC = metric_spec("eval_accuracy", [0.5])


def write_run(root: Path, name: str, acc: Optional[float] = None, loss: Optional[float] = None,
              trainable: int = 1000, flops: int = 10_000, device_mem: Optional[int] = None, wall: float = 60.0,
              model: str = "m", task: str = "t", eval_results: Optional[dict] = None) -> Path:
    """A finished run folder with a metrics.json holding the given numbers."""
    d = root / model / task / name
    d.mkdir(parents=True)
    final_eval: dict[str, Any] = {"epoch": 1.0, "eval_runtime": 0.5}
    if acc is not None:
        final_eval["eval_accuracy"] = acc
    if loss is not None:
        final_eval["eval_loss"] = loss
    seed = split_run_name(name)[1]
    metrics = {"run": {"name": name, "seed": seed, "method": "lora", "model": model, "task": task},
               "final_eval": final_eval, "params": {"trainable": trainable, "total": 10**6},
               "cost": {"adapter_flops_per_token": flops},
               "peak_memory": {"cpu_max_rss_bytes": 2**30, "device_peak_allocated_bytes": device_mem},
               "wall_time_seconds": wall, "loss_curve": []}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "config_used.yaml").write_text(f"seed: {seed}\n")
    if eval_results is not None:
        (d / "eval_results.json").write_text(json.dumps(eval_results))
    return d


def write_config(root: Path, name: str, values: list[float], seeds: Optional[list[int]] = None, **kw: Any) -> None:
    """One configuration: a run per seed (42, 43, ...) with the given accuracies."""
    for seed, v in zip(seeds or range(42, 42 + len(values)), values):
        write_run(root, f"{name}_seed{seed}", acc=v, **kw)


def row(comparison: dict, cid: str) -> dict:
    return next(c for c in comparison["configurations"] if c["id"] == cid)


# ---- collection ---------------------------------------------------------------------------------------------------

def test_split_run_name():
    assert split_run_name("lora_r8_seed42") == ("lora_r8", 42)
    assert split_run_name("full") == ("full", None)
    assert split_run_name("dora_seedling") == ("dora_seedling", None)


def test_collect_reads_metrics_costs_and_eval_results(tmp_path):
    write_run(tmp_path, "lora_r8_seed42", acc=0.5, loss=1.5, device_mem=123, wall=7.0,
              eval_results={"tasks": {"mmlu": {"metrics": {"accuracy": 0.25, "per_subject": {"x": 1.0}}}}})
    write_run(tmp_path, "lora_r8_seed43", acc=0.6)
    (tmp_path / "m" / "t" / "lora_r8_seed43" / "adapter").mkdir()  # the inside of a run is not searched
    runs = {r.run_name: r for r in collect_runs(tmp_path)}
    assert set(runs) == {"lora_r8_seed42", "lora_r8_seed43"}
    r = runs["lora_r8_seed42"]
    assert (r.configuration, r.seed, r.model, r.task, r.status) == ("lora_r8", 42, "m", "t", "complete")
    assert r.metrics == {"epoch": 1.0, "eval_runtime": 0.5, "eval_accuracy": 0.5, "eval_loss": 1.5,
                         "mmlu/accuracy": 0.25}
    assert (r.trainable_params, r.adapter_flops_per_token, r.wall_time_seconds) == (1000, 10_000, 7.0)
    assert (r.peak_memory_bytes, r.peak_memory_kind) == (123, "device")
    assert (runs["lora_r8_seed43"].peak_memory_bytes, runs["lora_r8_seed43"].peak_memory_kind) == (2**30, "cpu")


def test_peak_memory_is_taken_only_where_it_is_the_runs_own(tmp_path):
    """A scoped device peak is the run's; a CPU RSS peak only in a process's first run; unscoped (older) figures
    are taken as they are."""
    def scoped(name: str, peak: dict) -> None:
        d = write_run(tmp_path, name, acc=0.5)
        m = json.loads((d / "metrics.json").read_text())
        m["peak_memory"] = peak
        (d / "metrics.json").write_text(json.dumps(m))

    scoped("a_seed1", {"cpu_max_rss_bytes": 5, "device_peak_allocated_bytes": 7, "device_peak_scope": "this run",
                       "runs_before_in_process": 3})
    scoped("b_seed1", {"cpu_max_rss_bytes": 5, "device_peak_allocated_bytes": None, "runs_before_in_process": 0})
    scoped("c_seed1", {"cpu_max_rss_bytes": 5, "device_peak_allocated_bytes": None, "runs_before_in_process": 2})
    runs = {r.run_name: r for r in collect_runs(tmp_path)}
    assert (runs["a_seed1"].peak_memory_bytes, runs["a_seed1"].peak_memory_kind) == (7, "device")
    assert (runs["b_seed1"].peak_memory_bytes, runs["b_seed1"].peak_memory_kind) == (5, "cpu")
    assert runs["c_seed1"].peak_memory_bytes is None and "earlier runs" in " ".join(runs["c_seed1"].notes)
    assert all(runs[n].peak_memory_scoped for n in ("a_seed1", "b_seed1", "c_seed1"))
    write_run(tmp_path, "old_seed1", acc=0.5)  # no scope recorded: taken as it is, and flagged as unscoped
    old = {r.run_name: r for r in collect_runs(tmp_path)}["old_seed1"]
    assert (old.peak_memory_bytes, old.peak_memory_scoped, old.as_dict()["peak_memory_scoped"]) == (2**30, False, False)


def test_train_records_whose_peak_memory_it_is(make_config):
    from strato_peft.provenance import start_memory_window
    from strato_peft.training.run import train

    before = start_memory_window() + 1  # this call counts as one run start too
    m = train(make_config("llama", "lora")).metrics["peak_memory"]
    assert m["runs_before_in_process"] == before and m["device_peak_scope"] is None  # CPU: no device peak


def test_missing_corrupt_and_partial_runs_are_reported_and_excluded(tmp_path):
    write_config(tmp_path, "lora_r8", [0.50, 0.60])
    task = tmp_path / "m" / "t"
    (task / "lora_r8_seed44").mkdir()
    (task / "lora_r8_seed44" / "metrics.json").write_text("{not json")
    (task / "lora_r8_seed45").mkdir()
    (task / "lora_r8_seed45" / "metrics.json").write_text(json.dumps({"final_eval": {"eval_accuracy": 0.0}}))
    (task / ".lora_r8_seed46.partial" / "checkpoints").mkdir(parents=True)
    (task / "lora_r8_seed47").mkdir()
    (task / "lora_r8_seed47" / "config_used.yaml").write_text("seed: 47\n")
    bad_eval = write_run(tmp_path, "lora_r8_seed48", acc=0.70)
    (bad_eval / "eval_results.json").write_text("[broken")

    status = {r.run_name: (r.status, r.problem) for r in collect_runs(tmp_path)}
    assert status["lora_r8_seed44"][0] == "corrupt" and "unreadable" in status["lora_r8_seed44"][1]
    assert status["lora_r8_seed45"][0] == "corrupt" and "params.trainable" in status["lora_r8_seed45"][1]
    assert status["lora_r8_seed46"][0] == "incomplete" and "partial" in status["lora_r8_seed46"][1]
    assert status["lora_r8_seed47"][0] == "incomplete" and "no metrics.json" in status["lora_r8_seed47"][1]
    assert status["lora_r8_seed48"][0] == "complete"  # an unreadable eval_results.json is only a note

    comp = build_comparison(tmp_path)
    r = row(comp, "lora_r8")
    assert r["n"] == 3 and r["seeds"] == [42, 43, 48]
    assert r["mean"] == pytest.approx(np.mean([0.5, 0.6, 0.7]))
    assert {e["run"]: e["status"] for e in r["excluded_runs"]} == {
        "lora_r8_seed44": "corrupt", "lora_r8_seed45": "corrupt", "lora_r8_seed46": "incomplete",
        "lora_r8_seed47": "incomplete"}
    assert comp["run_counts"] == {"complete": 3, "incomplete": 2, "corrupt": 2}
    notes = next(x for x in comp["runs"] if x["run_name"] == "lora_r8_seed48")["notes"]
    assert any("eval_results.json unreadable" in n for n in notes)


# ---- statistics ---------------------------------------------------------------------------------------------------

def test_statistics_agree_with_numpy_and_scipy(tmp_path):
    rng = np.random.default_rng(7)
    base = rng.uniform(0.6, 0.7, size=5)
    other = base + rng.normal(0.01, 0.01, size=5)
    write_config(tmp_path, "lora_r8", list(base), seeds=[1, 2, 3, 4, 5])
    write_config(tmp_path, "lora_r4", list(other[:4]), seeds=[1, 2, 3, 4])  # seed 5 missing: 4 pairs
    comp = build_comparison(tmp_path)
    assert comp["baseline"] == "lora_r8" and comp["metric"]["name"] == "eval_accuracy"

    b, o = row(comp, "lora_r8"), row(comp, "lora_r4")
    assert b["is_baseline"] and b["vs_baseline"] is None
    assert b["mean"] == pytest.approx(np.mean(base)) and b["std"] == pytest.approx(np.std(base, ddof=1))
    assert o["n"] == 4 and o["std"] == pytest.approx(np.std(other[:4], ddof=1))
    assert o["score_mean"] == pytest.approx(100 * np.mean(other[:4]))

    vs = o["vs_baseline"]
    diffs = other[:4] - base[:4]
    assert vs["seeds"] == [1, 2, 3, 4] and vs["n"] == 4
    assert vs["mean_gain"] == pytest.approx(diffs.mean())
    assert vs["p_value"] == pytest.approx(sps.ttest_rel(other[:4], base[:4]).pvalue)
    boot = np.random.default_rng(BOOTSTRAP_SEED).choice(diffs, size=(BOOTSTRAP_RESAMPLES, 4)).mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    assert (vs["ci_low"], vs["ci_high"]) == pytest.approx((low, high), rel=1e-12)  # same seeded draws
    assert vs["ci_low"] <= vs["mean_gain"] <= vs["ci_high"]
    assert vs["score_ci_low"] == pytest.approx(100 * vs["ci_low"])
    assert vs["gain_std"] == pytest.approx(np.std(diffs, ddof=1)) and vs["score_gain_std"] == pytest.approx(
        100 * np.std(diffs, ddof=1))
    assert vs["seeds_to_call"] == seeds_to_call(diffs.mean(), np.std(diffs, ddof=1)) >= 2
    assert vs["call"] == ("tie" if vs["p_value"] >= 0.05 else "win" if vs["mean_gain"] > 0 else "loss")
    assert vs["median_gain"] == pytest.approx(np.median(diffs)) and vs["score_median_gain"] == pytest.approx(
        100 * np.median(diffs))
    assert vs["wilcoxon_p"] == pytest.approx(sps.wilcoxon(diffs).pvalue)


def test_one_run_that_never_trained_sinks_the_paired_t_not_the_rank_test():
    """20 seeds a steady point ahead, then one run of the better arm stuck at the class prior (42%): the t-test's
    std blows up and it calls a tie; the signed-rank test counts the stuck seed as one rank and still calls it."""
    rng = np.random.default_rng(3)
    base = 0.73 + rng.normal(0, 0.01, size=20)
    better = base + 0.01 + rng.normal(0, 0.004, size=20)
    better[3] = 0.42
    paired = paired_comparison(dict(enumerate(better)), dict(enumerate(base)), higher_is_better=True)
    assert paired.p_value > 0.5 and paired.call == "tie" and paired.mean_gain < 0.0
    assert paired.wilcoxon_p == pytest.approx(sps.wilcoxon(better - base).pvalue) and paired.wilcoxon_p < 0.001
    assert paired.median_gain == pytest.approx(np.median(better - base)) and paired.median_gain > 0.0
    # lower is better (a loss): the median gain flips its sign, the two-sided p does not
    flipped = paired_comparison(dict(enumerate(better)), dict(enumerate(base)), higher_is_better=False)
    assert flipped.median_gain == pytest.approx(-paired.median_gain) and flipped.wilcoxon_p == paired.wilcoxon_p


def test_the_rank_test_is_undefined_without_two_differences():
    assert wilcoxon_p([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]) == (None, "needs >= 2 non-zero paired differences, has 0")
    assert wilcoxon_p([0.5, 0.6], [0.5, 0.5])[0] is None
    assert wilcoxon_p([0.5, 0.7], [0.4, 0.5])[0] == pytest.approx(0.5)  # exact: both orders of two signs


def test_a_run_stuck_at_the_class_prior_is_named_in_its_notes(tmp_path):
    write_config(tmp_path, "lora_r8", [0.70, 0.72])
    path = tmp_path / "m" / "t" / "lora_r8_seed43" / "metrics.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "warnings": ["the classifier learned nothing past the class prior: ..."]}))
    notes = {r["run_name"]: r["notes"] for r in build_comparison(tmp_path)["runs"]}
    assert notes["lora_r8_seed43"] == ["the classifier learned nothing past the class prior: ..."]
    assert notes["lora_r8_seed42"] == []


def test_a_paired_call_is_a_win_or_loss_only_below_the_level():
    assert paired_call(0.5, 0.01) == "win" and paired_call(-0.5, 0.01) == "loss"
    assert paired_call(0.5, 0.05) == paired_call(0.5, 0.2) == paired_call(0.5, None) == "tie"
    assert paired_call(0.5, 0.02, alpha=0.0125) == "tie"  # e.g. a fourth try at one setting, Bonferroni


@pytest.mark.parametrize("effect,seeds", [(0.2, 199), (0.5, 34), (0.8, 15), (1.0, 10)])
def test_seeds_to_call_matches_the_paired_t_power_tables(effect, seeds):
    """Cohen's / G*Power's matched-pairs sample sizes (two-sided, alpha 0.05, power 0.8); only gain/std matters, and
    its sign does not."""
    assert seeds_to_call(effect, 1.0) == seeds
    assert seeds_to_call(-effect * 0.37, 0.37) == seeds
    assert seeds_to_call(effect, 1.0, power=0.9) > seeds and seeds_to_call(effect, 1.0, alpha=0.0125) > seeds


def test_seeds_to_call_is_none_where_no_test_can_call_the_gain():
    assert seeds_to_call(0.0, 1.0) is None and seeds_to_call(0.5, 0.0) is None
    assert seeds_to_call(float("nan"), 1.0) is None
    assert seeds_to_call(0.01, 1.0, most=1000) is None  # about 78,000 seeds


def test_p_value_undefined_cases_say_why(tmp_path):
    write_config(tmp_path, "lora_r8", [0.50, 0.60, 0.70])
    write_config(tmp_path, "same_gain", [0.52, 0.62, 0.72])  # every paired difference equal
    write_config(tmp_path, "one_seed", [0.55])
    comp = build_comparison(tmp_path)
    same = row(comp, "same_gain")["vs_baseline"]
    assert same["p_value"] is None and "zero variance" in same["p_note"]
    assert same["mean_gain"] == pytest.approx(0.02)
    one = row(comp, "one_seed")
    assert one["std"] == 0.0 and one["n"] == 1
    assert one["vs_baseline"]["p_value"] is None and ">= 2" in one["vs_baseline"]["p_note"]
    assert one["vs_baseline"]["ci_low"] is None
    assert one["verdicts"]["stability"]["passed"] is None


def test_loss_is_lower_is_better_and_default_metric(tmp_path):
    for seed, (b, o) in zip((1, 2), ((1.0, 1.5), (2.0, 2.5))):
        write_run(tmp_path, f"lora_r8_seed{seed}", loss=b)
        write_run(tmp_path, f"worse_seed{seed}", loss=o)  # exactly 0.5 higher: guardrail holds
        write_run(tmp_path, f"too_worse_seed{seed}", loss=o + 1e-6)
        write_run(tmp_path, f"better_seed{seed}", loss=b - 0.25)
    comp = build_comparison(tmp_path)
    assert comp["metric"] == {"name": "eval_loss", "higher_is_better": False, "scale": 1.0,
                              "unit": "eval_loss units"}
    assert row(comp, "better")["vs_baseline"]["mean_gain"] == pytest.approx(0.25)
    assert row(comp, "worse")["vs_baseline"]["mean_gain"] == pytest.approx(-0.5)
    assert row(comp, "worse")["verdicts"]["accuracy"]["passed"] is True
    assert row(comp, "too_worse")["verdicts"]["accuracy"]["passed"] is False


# ---- verdicts -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params,flops,expected", [
    (700, 10_000, True), (701, 10_000, False),  # params ratio 0.7 is inclusive
    (1000, 8000, True), (1000, 8001, False),  # FLOPs ratio 0.8 is inclusive
    (701, 8001, False), (100, 20_000, True),  # either criterion suffices
])
def test_efficiency_flips_at_threshold(params, flops, expected):
    v = efficiency(params, 1000, flops, 10_000)
    assert v.passed is expected
    assert v.figures["params_ratio"] == pytest.approx(params / 1000)
    assert PARAMS_RATIO_MAX == 0.7 and FLOPS_RATIO_MAX == 0.8


@pytest.mark.parametrize("mean,expected", [(0.795, True), (0.79499, False), (0.90, True)])
def test_accuracy_guardrail_flips_at_half_a_point(mean, expected):
    v = accuracy_guardrail(mean, 0.80, ACC)
    assert v.passed is expected
    assert v.figures["baseline_mean"] == pytest.approx(80.0) and v.figures["unit"] == "points (metric x 100)"
    assert ACCURACY_DROP_MAX == 0.5


@pytest.mark.parametrize("std,expected", [(0.004, True), (0.00401, False), (0.0, True)])
def test_stability_flips_at_point_four(std, expected):
    assert stability(std, 3, ACC).passed is expected
    assert STABILITY_STD_MAX == 0.4


def test_verdicts_end_to_end_at_thresholds(tmp_path):
    write_config(tmp_path, "lora_r8", [0.800, 0.800, 0.800], trainable=1000, flops=10_000)
    write_config(tmp_path, "edge", [0.791, 0.795, 0.799], trainable=700, flops=10_000)  # -0.5 pts, std 0.4 pts
    write_config(tmp_path, "beyond", [0.7909, 0.7949, 0.7989], trainable=701, flops=8001)
    comp = build_comparison(tmp_path)
    edge, beyond = row(comp, "edge"), row(comp, "beyond")
    assert edge["score_std"] == pytest.approx(0.4) and edge["verdicts"]["accuracy"]["figures"]["gain"] == \
        pytest.approx(-0.5)
    assert [edge["verdicts"][k]["passed"] for k in ("efficiency", "accuracy", "stability")] == [True, True, True]
    assert edge["all_passed"] is True
    assert [beyond["verdicts"][k]["passed"] for k in ("efficiency", "accuracy", "stability")] == \
        [False, False, True]
    assert beyond["all_passed"] is False
    base = row(comp, "lora_r8")["verdicts"]
    assert base["efficiency"]["passed"] is None and base["stability"]["passed"] is True


# ---- defaults, outputs, CLI ---------------------------------------------------------------------------------------

def test_default_baseline_and_groups(tmp_path):
    write_config(tmp_path, "adalora_r8", [0.5, 0.6])
    write_config(tmp_path, "lora_r8", [0.5, 0.6])
    assert build_comparison(tmp_path)["baseline"] == "lora_r8"
    write_config(tmp_path, "lora_r8", [0.4, 0.5], task="t2")
    comp = build_comparison(tmp_path)
    assert {c["id"] for c in comp["configurations"]} == {"m/t/adalora_r8", "m/t/lora_r8", "m/t2/lora_r8"}
    assert row(comp, "m/t/adalora_r8")["vs_baseline"]["baseline"] == "m/t/lora_r8"


def test_default_baseline_without_lora_r8_is_first_sorted(tmp_path):
    write_config(tmp_path, "dora", [0.5])
    write_config(tmp_path, "adalora", [0.5])
    assert build_comparison(tmp_path, metric="eval_accuracy")["baseline"] == "adalora"


def test_cli_writes_csv_and_json_and_table(tmp_path, capsys):
    write_config(tmp_path / "res", "lora_r8", [0.5, 0.6])
    write_config(tmp_path / "res", "lora_r4", [0.52, 0.61])
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "res"), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lora_r4" in printed and "(baseline)" in printed and "comparison.json" in printed
    data = json.loads((out / "comparison.json").read_text())
    assert data["baseline"] == "lora_r8" and len(data["configurations"]) == 2
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["id"] for r in rows] == ["lora_r4", "lora_r8"]
    assert float(rows[0]["score_mean"]) == pytest.approx(56.5)
    # a tie (p about 0.2 on two seeds) says how many seeds a new test needs to call its gain
    to_call = seeds_to_call(0.015, float(np.std([0.02, 0.01], ddof=1)))
    assert int(rows[0]["seeds_to_call"]) == to_call and float(rows[0]["score_gain_std"]) == pytest.approx(0.7071, 1e-3)
    assert float(rows[0]["score_median_gain"]) == pytest.approx(1.5) and float(rows[0]["wilcoxon_p"]) == 0.5
    assert rows[0]["call"] == "tie" and re.search(r"lora_r4 .* 0\.205 +tie ", printed), printed
    assert f"a new test needs {to_call} paired seeds to call a gain of +1.5" in printed
    # derived files: a second run replaces them in place (default output dir: the results folder)
    assert main(["compare", str(tmp_path / "res"), "--metric", "eval_runtime"]) == 0
    assert json.loads((tmp_path / "res" / "comparison.json").read_text())["metric"]["name"] == "eval_runtime"
    write_outputs(data, out)
    assert json.loads((out / "comparison.json").read_text())["metric"]["name"] == "eval_accuracy"


@pytest.mark.parametrize("args,needle", [
    (["missing"], "does not exist"),
    (["empty"], "holds no runs"),
    (["res", "--baseline", "nope"], "available: lora_r8"),
    (["res", "--metric", "nope"], "available: epoch, eval_accuracy"),
    (["partial_only"], "no complete run"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, needle):
    write_config(tmp_path / "res", "lora_r8", [0.5])
    (tmp_path / "empty").mkdir()
    (tmp_path / "partial_only" / "m" / "t" / ".lora_r8_seed1.partial").mkdir(parents=True)
    assert main(["compare", str(tmp_path / args[0]), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err
    assert not (tmp_path / "res" / "comparison.json").exists()


def test_several_results_folders_are_one_comparison(tmp_path, capsys):
    """Runs made on different days sit in different folders: compared as one set, seeds paired across folders."""
    write_config(tmp_path / "day1", "lora_r8", [0.50, 0.60])
    write_config(tmp_path / "day1", "strato", [0.55], seeds=[42])
    write_config(tmp_path / "day2", "strato", [0.64], seeds=[43])
    write_run(tmp_path / "day2", "strato_seed44", acc=0.70)
    write_run(tmp_path / "day1", "lora_r8_seed44", acc=0.62)
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "day1"), str(tmp_path / "day2"), "--output-dir", str(out)]) == 0
    data = json.loads((out / "comparison.json").read_text())
    assert data["results_dir"] == [str(tmp_path / "day1"), str(tmp_path / "day2")]
    strato = next(c for c in data["configurations"] if c["id"] == "strato")
    assert strato["n"] == 3 and strato["seeds"] == [42, 43, 44]
    assert strato["vs_baseline"]["n"] == 3 and strato["vs_baseline"]["seeds"] == [42, 43, 44]
    assert strato["vs_baseline"]["mean_gain"] == pytest.approx(((0.55 - 0.50) + (0.64 - 0.60) + (0.70 - 0.62)) / 3)
    # each run's folder is recorded as found, so plots and reports can open it
    assert {Path(r["path"]).parent.parent.parent.name for r in data["runs"]} == {"day1", "day2"}
    assert all((Path(r["path"]) / "metrics.json").is_file() for r in data["runs"])
    assert (out / "plots" / "pareto.png").is_file()
    # report over several folders: the folders are named on the page
    assert main(["report", str(tmp_path / "day1"), str(tmp_path / "day2"), "--output-dir", str(out)]) == 0
    assert f"{tmp_path / 'day1'}, {tmp_path / 'day2'}" in (out / "report.md").read_text()
    # a folder given twice, or one inside the other, counts each run once
    assert build_comparison([tmp_path / "day1", tmp_path / "day1"])["configurations"][0]["n"] == 3
    assert sum(c["n"] for c in build_comparison([tmp_path, tmp_path / "day2"])["configurations"]) == 6


@pytest.mark.parametrize("layout,needle", [
    ("same_run_twice", "is in two results directories"),
    ("no_output_dir", "pass --output-dir"),
    ("one_missing", "does not exist"),
])
def test_several_results_folders_bad_input(tmp_path, capsys, layout, needle):
    write_config(tmp_path / "a", "lora_r8", [0.5, 0.6])
    write_config(tmp_path / "b", "lora_r8", [0.7], seeds=[44] if layout != "same_run_twice" else [43])
    second = tmp_path / ("nope" if layout == "one_missing" else "b")
    extra = [] if layout == "no_output_dir" else ["--output-dir", str(tmp_path / "out")]
    assert main(["compare", str(tmp_path / "a"), str(second), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "a" / "comparison.json").exists()


def test_script_runs_via_subprocess(tmp_path):
    write_config(tmp_path / "res", "lora_r8", [0.5, 0.6])
    script = str(REPO / "scripts" / "compare.py")
    done = subprocess.run([sys.executable, script, "--results_dir", str(tmp_path / "res"), "--output_dir",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "comparison.csv").is_file() and (tmp_path / "o" / "comparison.json").is_file()
    bad = subprocess.run([sys.executable, script, "--results-dir", str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


# ---- plots --------------------------------------------------------------------------------------------------------

def test_layer_ranks_from_int_and_adalora_mask_patterns():
    from strato_peft.experiments.plots import layer_ranks

    table = layer_ranks({"rank_pattern": {
        "base_model.model.model.layers.0.self_attn.q_proj": 4,
        "base_model.model.model.layers.1.self_attn.q_proj": [True, False, True],
        "model.layers.1.mlp.up_proj": 0,
        "model.layers.2.mlp.up_proj.lora_E": [False, True, True, True],  # AdaLoRA's saved form
        "bert.encoder.layer.0.attention.output.dense.lora_E": [True], "bert.encoder.layer.0.output.dense": 2}})
    assert table == {"self_attn.q_proj": {0: 4, 1: 2}, "mlp.up_proj": {1: 0, 2: 3},
                     "attention.output.dense": {0: 1}, "output.dense": {0: 2}}


def test_compare_writes_pareto_loss_and_rank_plots(tmp_path, capsys):
    import matplotlib.image as mpimg

    for r, acc in ((2, [0.60, 0.62]), (8, [0.70, 0.71])):
        write_config(tmp_path, f"lora_r{r}", acc, trainable=1000 * r)
    write_config(tmp_path, "adalora_r4", [0.69, 0.70], trainable=3000)
    for run in (tmp_path / "m" / "t").iterdir():
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["loss_curve"] = [{"step": s, "loss": 2.0 / s} for s in (1, 2, 3)]
        (run / "metrics.json").write_text(json.dumps(metrics))
        if run.name.startswith("adalora"):
            (run / "adapter").mkdir()
            (run / "adapter" / "adapter_config.json").write_text(json.dumps({"rank_pattern": {
                f"model.layers.{i}.self_attn.q_proj": [True] * (i + 1) for i in range(3)}}))
    assert main(["compare", str(tmp_path)]) == 0
    plots = tmp_path / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["loss_curves.png", "pareto.png", "ranks_adalora_r4.png"]
    for png in plots.iterdir():
        image = mpimg.imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # a real, non-blank picture
    assert "3 plots" in capsys.readouterr().out


# ---- report -------------------------------------------------------------------------------------------------------

def test_report_html_and_markdown(tmp_path, capsys):
    import base64

    write_config(tmp_path, "lora_r8", [0.70, 0.71])
    write_config(tmp_path, "lora_r2", [0.60, 0.62], trainable=250)
    (tmp_path / "m" / "t" / ".lora_r2_seed44.partial").mkdir()
    assert main(["report", str(tmp_path)]) == 0
    assert "Report written to" in capsys.readouterr().out
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and "lora_r2" in page and "PASS" in page and "FAIL" in page
    assert "lora_r2_seed44" in page and "incomplete" in page  # the unfinished run is listed, not averaged
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1 and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained: no external resource
    md = (tmp_path / "report.md").read_text()
    assert "| lora_r2 |" in md and "![pareto](plots/pareto.png)" in md and (tmp_path / "plots" / "pareto.png").is_file()
    # lora_r2 is 9.5 points under on both seeds (gains -10, -9): p about 0.035, a loss; no seeds-to-call for a call
    assert re.search(r"\| lora_r2 \|.*\| 0\.0\d+ \| loss \| - \|", md), md
    assert "Call: win or loss where the paired t-test's p < 0.05" in md and "tie" in page
