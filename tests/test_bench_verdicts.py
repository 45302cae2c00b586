"""The verdicts of bench/strato_vs_baselines.py (the benchmark that decides whether STRATO wins), on made-up arms."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "strato_vs_baselines.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("strato_vs_baselines", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def bench_arms(bench):
    """The benchmark's tasks and arms (bench/bench_arms.py; importable once the CLI has put bench/ on the path)."""
    import bench_arms

    return bench_arms


@pytest.fixture(scope="module")
def bench_runs(bench):
    """Training the arms (bench/bench_runs.py)."""
    import bench_runs

    return bench_runs


def arm(mean: float, params: int, wall: float) -> dict:
    return {"mean": mean, "params": params, "wall_seconds": wall}


R1 = 1000  # params of LoRA r1; rank r costs r * R1


def test_higher_bar_against_the_frontier_mlp_dora_and_r8_wall_time(bench):
    arms = {f"lora_all_r{r}": arm(70.0 + r / 10, r * R1, 100.0) for r in (1, 2, 4, 8, 16)}
    arms["lora_mlp_eqparams"] = arm(71.0, 8 * R1, 90.0)
    arms["dora_all_r4"] = arm(70.5, 5 * R1, 130.0)
    arms["strato_knapsack_b0.5"] = arm(70.45, 4 * R1 - 3, 115.0)   # above r1, r2 (70.2); r4 costs 3 params more
    arms["strato_knapsack_b0.7"] = arm(70.9, int(5.6 * R1), 125.0)  # r4 (70.4) is within cost; too slow
    v = bench.higher_bar(arms)
    half = v["strato_knapsack_b0.5"]
    assert half["frontier_best_at_cost"] == pytest.approx(70.4)  # r4 counts: 3 params over is within 1%
    assert half["beats_frontier_at_cost"] is True and half["beats_lora_mlp_eqparams"] is False
    assert half["beats_dora_all_r4"] is False and half["all_passed"] is False
    assert half["wall_reference"] == "lora_all_r8" and half["wall_time_ratio"] == pytest.approx(1.15)
    seven = v["strato_knapsack_b0.7"]
    assert seven["wall_time_ok"] is False and seven["beats_dora_all_r4"] is True


def test_a_tie_with_the_same_run_is_at_or_above_it_despite_float_round_off(bench):
    """A STRATO arm that is LoRA r1's run, its mean summed in another order (1e-14 below), is at or above r1; a
    real shortfall of 0.01 is not."""
    mean = (96.53 + 96.13 + 94.98) / 3
    arms = {"lora_all_r1": arm(mean, R1, 100.0), "lora_all_r8": arm(95.0, 8 * R1, 100.0),
            "strato_knapsack_b0.125": arm(mean - 1e-14, R1, 100.0), "strato_knapsack_b0.25": arm(mean - 0.01, R1, 100.0)}
    v = bench.higher_bar(arms)
    assert v["strato_knapsack_b0.125"]["beats_frontier_at_cost"] is True
    assert v["strato_knapsack_b0.25"]["beats_frontier_at_cost"] is False


def test_higher_bar_without_r8_runs_uses_the_highest_rank_present(bench):
    """CPU re-runs hold only some arms: the wall-time reference is the highest frontier rank there, and r8's params
    (for the 'from 0.5x up' MLP/DoRA checks) follow from that rank's."""
    arms = {"lora_all_r4": arm(91.0, 4 * R1, 1000.0), "dora_all_r4": arm(91.2, 5 * R1, 1400.0),
            "strato_knapsack_b0.5": arm(93.0, 4 * R1, 1100.0), "strato_knapsack_b0.25": arm(90.0, 2 * R1, 900.0)}
    v = bench.higher_bar(arms)
    half = v["strato_knapsack_b0.5"]
    assert half["wall_reference"] == "lora_all_r4" and half["wall_time_ratio"] == pytest.approx(1.1)
    assert half["beats_frontier_at_cost"] is True and half["beats_dora_all_r4"] is True and half["all_passed"] is True
    quarter = v["strato_knapsack_b0.25"]
    assert quarter["frontier_best_at_cost"] is None  # no LoRA rank at <= its params in this folder
    assert "beats_dora_all_r4" not in quarter          # below 0.5x of r8's params: not compared with DoRA r4
    assert bench.higher_bar({"strato_knapsack_b0.5": arm(93.0, 4 * R1, 1100.0)}) == {}  # nothing to compare with


def test_curve_verdict_needs_a_point_at_every_rank_and_no_negative_margin(bench):
    arms = {f"lora_all_r{r}": arm(70.0 + r / 10, r * R1, 100.0) for r in (1, 2, 4, 8, 16)}
    budgets = {0.125: 1, 0.25: 2, 0.5: 4, 1.0: 8, 2.0: 16}
    for b, r in budgets.items():
        arms[f"strato_knapsack_b{b}"] = arm(70.05 + r / 10, r * R1, 100.0)
    curve = bench.curve_verdict(arms, bench.higher_bar(arms))
    assert curve["beats_whole_curve"] is True
    assert [p["margin"] for p in curve["points"].values()] == pytest.approx([0.05] * 5)
    arms["strato_knapsack_b1.0"]["mean"] = 70.7  # below LoRA r8 (70.8)
    assert bench.curve_verdict(arms, bench.higher_bar(arms))["beats_whole_curve"] is False
    del arms["strato_knapsack_b2.0"]
    assert bench.curve_verdict(arms, bench.higher_bar(arms))["beats_whole_curve"] is None


def test_curve_points_pair_seeds_and_call_only_significant_margins(bench):
    """A margin the seeds agree on is a win or a loss (paired t-test p < 0.05); one that flips sign across seeds is
    a tie, however large its mean; against the frontier arm that is best at the point's cost."""
    def seeded(scores: list[float], params: int) -> dict:
        return {"mean": sum(scores) / len(scores), "params": params, "wall_seconds": 100.0,
                "seed_scores": dict(zip((42, 43, 44), scores))}

    arms = {f"lora_all_r{r}": seeded([70.0, 71.0, 72.0], r * R1) for r in (1, 2, 4, 8, 16)}
    arms["lora_all_r8"] = seeded([71.0, 72.0, 73.0], 8 * R1)  # the best at 1x and 2x
    arms["strato_knapsack_b0.125"] = seeded([70.5, 71.6, 72.4], R1)    # +0.5 on every seed: win
    arms["strato_knapsack_b0.25"] = seeded([72.0, 69.5, 73.0], 2 * R1)  # +0.5 mean, seeds disagree: tie
    arms["strato_knapsack_b0.5"] = seeded([70.0, 71.0, 72.0], 4 * R1)   # identical runs: tie, p undefined
    arms["strato_knapsack_b1.0"] = seeded([70.6, 71.5, 72.6], 8 * R1)   # -0.43 on every seed vs r8: loss
    arms["strato_knapsack_b2.0"] = seeded([71.0, 72.0, 73.1], 16 * R1)
    curve = bench.curve_verdict(arms, bench.higher_bar(arms))
    points = curve["points"]
    assert [p["call"] for p in points.values()] == ["win", "tie", "tie", "loss", "tie"]
    assert points[0.125]["p_value"] < 0.05 and points[0.25]["p_value"] > 0.5
    assert points[0.5]["p_value"] is None and "zero variance" in points[0.5]["p_note"]
    assert points[1.0]["frontier_arm"] == points[2.0]["frontier_arm"] == "lora_all_r8"
    assert points[0.25]["paired_gain_std"] == pytest.approx(math.sqrt(3.25))  # diffs +2, -1.5, +1
    assert (curve["wins"], curve["ties"], curve["losses"]) == (1, 3, 1)
    assert curve["beats_whole_curve"] is False  # the point-estimate bar still counts the 1x margin
    assert "| 1 | 8,000 | 71.57 | 72.00 (lora_all_r8) | -0.43 |" in bench.markdown("tweets", {
        "arms": arms | {n: {**a, "n": 3, "std": 1.0, "sampling_error": 0.5, "adapter_flops": 0,
                            "peak_memory_bytes": 1, "original_criteria": {}} for n, a in arms.items()},
        "verdicts": {}, "curve": curve, "comparison": {"baseline": "lora_all_r8"}})


def test_a_point_below_the_curve_is_judged_against_the_cheapest_lora_and_not_in_the_whole_curve_verdict(bench):
    """STRATO at half r1's params has no LoRA at its cost: it is compared with r1 (twice its params), paired by
    seed, and its loss there does not count against the whole-curve verdict (LoRA has no point there)."""
    def seeded(scores: list[float], params: int) -> dict:
        return {"mean": sum(scores) / len(scores), "params": params, "wall_seconds": 100.0,
                "seed_scores": dict(zip((42, 43, 44), scores))}

    arms = {f"lora_all_r{r}": seeded([70.0 + r / 10, 71.0 + r / 10, 72.0 + r / 10], r * R1) for r in (1, 2, 4, 8, 16)}
    for b, r in {0.125: 1, 0.25: 2, 0.5: 4, 1.0: 8, 2.0: 16}.items():
        arms[f"strato_knapsack_b{b}"] = seeded([70.05 + r / 10, 71.05 + r / 10, 72.05 + r / 10], r * R1)
    arms["strato_knapsack_b0.0625"] = seeded([69.0, 70.2, 70.9], R1 // 2)  # below r1 on every seed
    curve = bench.curve_verdict(arms, bench.higher_bar(arms))
    below = curve["below_curve"][0.0625]
    assert below["frontier_arm"] == "lora_all_r1" and below["frontier_params"] == R1
    assert below["margin"] == pytest.approx((69.0 + 70.2 + 70.9) / 3 - 71.1) and below["call"] == "loss"
    assert 0.0625 not in curve["points"] and curve["beats_whole_curve"] is True
    assert (curve["wins"], curve["ties"], curve["losses"]) == (0, 5, 0)  # its loss is not one of the curve's
    table = bench.markdown("tweets", {
        "arms": {n: {**a, "n": 3, "std": 1.0, "sampling_error": 0.5, "adapter_flops": 0, "peak_memory_bytes": 1,
                     "original_criteria": {}} for n, a in arms.items()},
        "verdicts": {}, "curve": curve, "comparison": {"baseline": "lora_all_r8"}})
    assert "| 0.0625 | 500 | 70.03 | 71.10 (lora_all_r1, 1,000) | -1.07 |" in table
    del arms["lora_all_r1"]  # the cheapest LoRA is now r2
    assert bench.curve_verdict(arms, bench.higher_bar(arms))["below_curve"][0.0625]["frontier_arm"] == "lora_all_r2"


def test_a_point_between_two_ranks_is_also_set_against_the_straight_line_between_them(bench):
    """Between r1 and r2 the staircase bar is r1's score; the line bar is r1 + w (r2 - r1), seed by seed. A point that
    wins against the staircase by spending more can still lose against the line; at a rank's own cost, or where the
    curve falls (r16 below r8), the staircase is the bar and there is no line."""
    def seeded(scores: list[float], params: int) -> dict:
        return {"mean": sum(scores) / len(scores), "params": params, "wall_seconds": 100.0,
                "seed_scores": dict(zip((42, 43, 44), scores))}

    arms = {f"lora_all_r{r}": seeded([70.0 + r, 71.0 + r, 72.0 + r], r * R1) for r in (1, 2, 4, 8)}
    arms["lora_all_r16"] = seeded([77.0, 78.0, 79.0], 16 * R1)  # below r8 (79, 80, 81)
    arms["strato_knapsack_b0.1875"] = seeded([71.3, 72.3, 73.25], R1 + R1 // 2)  # r1 + 0.25..0.3: under the line (r1 + 0.5)
    arms["strato_knapsack_b0.25"] = seeded([72.1, 73.1, 74.1], 2 * R1)
    arms["strato_knapsack_b1.5"] = seeded([79.5, 80.5, 81.5], 12 * R1)
    curve = bench.curve_verdict(arms, bench.higher_bar(arms))
    mid = curve["points"][0.1875]
    assert mid["frontier_arm"] == "lora_all_r1" and mid["call"] == "win"
    line = mid["line"]
    assert (line["low"], line["high"], line["weight"]) == ("lora_all_r1", "lora_all_r2", pytest.approx(0.5))
    assert line["seed_scores"] == pytest.approx({42: 71.5, 43: 72.5, 44: 73.5})
    assert line["margin"] == pytest.approx((71.3 + 72.3 + 73.25) / 3 - 72.5) and line["call"] == "loss"
    assert curve["points"][0.25]["line"] is None  # at r2's own cost
    assert curve["points"][1.5]["line"] is None  # the line r8 -> r16 falls below r8: the staircase is stricter
    table = bench.markdown("tweets", {
        "arms": {n: {**a, "n": 3, "std": 1.0, "sampling_error": 0.5, "adapter_flops": 0, "peak_memory_bytes": 1,
                     "original_criteria": {}} for n, a in arms.items()},
        "verdicts": {}, "curve": curve, "comparison": {"baseline": "lora_all_r8"}})
    assert "| 0.1875 | 1,500 | 72.28 | 72.50 (lora_all_r1 - lora_all_r2, at 0.50) | -0.22 |" in table
    assert table.count("(lora_all_r1 - lora_all_r2") == 1
    # any arm against the line by --pairs A:lora_line (the floor variant is no curve point of its own)
    arms["strato_knapsack_b0.1875_floor"] = seeded([71.8, 72.7, 73.6], R1 + R1 // 2)
    row = bench.paired_row(arms, "strato_knapsack_b0.1875_floor", "lora_line")
    assert row["b"] == pytest.approx(72.5) and row["paired_gain"] == pytest.approx(0.2) and row["paired_seeds"] == 3
    assert row["ahead"] == 3 and row["per_seed"][43] == {"a": 72.7, "b": pytest.approx(72.5)}
    from strato_peft.experiments.stats import seeds_to_call

    assert row["paired_gain_std"] == pytest.approx(0.1) and row["seeds_to_call"] == seeds_to_call(0.2, 0.1) == 5
    assert bench.paired_row(arms, "strato_knapsack_b0.1875", "lora_line")["ahead"] == 0  # under the line on each
    assert "no LoRA line" in bench.paired_row(arms, "strato_knapsack_b0.25", "lora_line")["error"]


def test_scheduler_worth_pairs_each_budget_by_the_runs_recorded_scheduler_and_pools_the_pairs(bench):
    """With vs without the scheduler at each budget that has both, by the setting the runs recorded (the plain arm
    was the scheduled one before the default changed, the unscheduled one after), paired by seed; budgets with one
    of the two, arms of mixed settings and other STRATO arms (ablations) are left out; pooled over (budget, seed)."""
    def seeded(scores: dict[int, float], scheduler: list[bool]) -> dict:
        return {"mean": sum(scores.values()) / len(scores), "params": R1, "seed_scores": scores,
                "scheduler": scheduler}

    arms = {"strato_knapsack_b0.125": seeded({42: 74.0, 43: 75.0, 44: 76.0}, [True]),  # the old default: on
            "strato_knapsack_b0.125_nosched": seeded({42: 74.5, 43: 75.4, 44: 76.6}, [False]),  # -0.5/-0.4/-0.6
            "strato_knapsack_b0.5_sched": seeded({42: 75.0, 43: 76.0, 44: 75.5, 45: 80.0}, [True]),
            "strato_knapsack_b0.5": seeded({42: 75.5, 43: 75.0, 44: 75.5}, [False]),  # the new default: off
            "strato_knapsack_b1.0": seeded({42: 75.0, 43: 76.0}, [True]),             # no twin: left out
            "strato_knapsack_b2.0": seeded({42: 75.0, 43: 76.0}, [False, True]),      # mixed: left out
            "strato_knapsack_b2.0_nosched": seeded({42: 75.0, 43: 76.0}, [False]),
            "strato_knapsack_b0.5_mappick": seeded({42: 70.0, 43: 70.0}, [False])}
    worth = bench.scheduler_worth(arms)
    assert list(worth["points"]) == [0.125, 0.5]
    low, half = worth["points"][0.125], worth["points"][0.5]
    assert (low["with_arm"], low["without_arm"]) == ("strato_knapsack_b0.125", "strato_knapsack_b0.125_nosched")
    assert (half["with_arm"], half["without_arm"]) == ("strato_knapsack_b0.5_sched", "strato_knapsack_b0.5")
    assert low["call"] == "loss" and low["paired_gain"] == pytest.approx(-0.5) and low["p_value"] < 0.05
    assert half["call"] == "tie" and half["paired_seeds"] == 3 and half["paired_gain"] == pytest.approx(1 / 6)
    assert half["with"] - half["without"] == pytest.approx(1 / 6)  # means over the paired seeds (not seed 45's 80)
    assert worth["pooled"]["pairs"] == 6 and worth["pooled"]["mean_gain"] == pytest.approx((-1.5 + 0.5) / 6)
    text = bench.markdown("tweets", {"arms": {}, "verdicts": {}, "scheduler": worth,
                                     "comparison": {"baseline": "lora_all_r8"}})
    assert "| 0.125 | 75.00 | 75.50 | -0.50 | 3 |" in text and "6 pairs, mean gain -0.17" in text
    assert bench.scheduler_worth({"strato_knapsack_b0.5": arms["strato_knapsack_b0.5"]}) == {"points": {},
                                                                                               "pooled": None}


def test_a_complete_run_trained_with_other_settings_is_named_not_reused(bench, bench_arms, bench_runs, tmp_path):
    """The benchmark skips a complete run only if it was trained as the arm is now defined: a changed default (the
    scheduler), another lr, are named; where it writes is not a setting, nor STRATO's section for a LoRA arm."""
    import yaml

    table = bench.arms("tweets")
    old = bench_arms.arm_config("tweets", "strato_knapsack_b0.5_sched", table["strato_knapsack_b0.5_sched"], 42,
                           tmp_path / "a")
    (tmp_path / "config_used.yaml").write_text(yaml.safe_dump(old.to_yaml_dict()))
    now = bench_arms.arm_config("tweets", "strato_knapsack_b0.5_nosched", table["strato_knapsack_b0.5_nosched"], 42,
                           tmp_path / "b")  # another output folder and run name too
    assert bench_runs.config_drift(tmp_path, now) == ["peft.strato.scheduler: True -> False"]
    assert bench_runs.config_drift(tmp_path, old) == []
    again = bench_arms.arm_config("tweets", "strato_knapsack_b0.5_sched", table["strato_knapsack_b0.5_sched"], 42,
                             tmp_path, learning_rate=5e-3)
    assert bench_runs.config_drift(tmp_path, again) == ["training.learning_rate: 0.002 -> 0.005"]
    lora = bench_arms.arm_config("tweets", "lora_all_r4", table["lora_all_r4"], 42, tmp_path)
    used = lora.to_yaml_dict()
    used["peft"]["strato"]["max_probes"] = 3  # an old STRATO default in a LoRA run's config: not LoRA's setting
    (tmp_path / "config_used.yaml").write_text(yaml.safe_dump(used))
    assert bench_runs.config_drift(tmp_path, lora) == []
    (tmp_path / "config_used.yaml").write_text("seed: [")
    assert bench_runs.config_drift(tmp_path, lora)[0].startswith("config_used.yaml unreadable")


def test_summary_measures_original_criteria_and_wall_time_against_the_same_arm(bench, tmp_path):
    """Without LoRA r8 runs, compare's baseline (the original criteria) and the wall-time reference are both the
    highest frontier rank present, not whichever arm compare would pick by default (here r1, sorting first)."""
    from test_compare import write_config

    write_config(tmp_path, "lora_all_r1", [0.70, 0.71], trainable=R1, wall=100.0)
    write_config(tmp_path, "lora_all_r4", [0.72, 0.71], trainable=4 * R1, wall=110.0)
    write_config(tmp_path, "strato_knapsack_b0.5", [0.74, 0.73], trainable=4 * R1, wall=121.0)
    summary = bench.summarize("tweets", tmp_path)
    assert bench.reference_order()[:2] == ["lora_all_r8", "lora_all_r16"]
    assert summary["comparison"]["baseline"] == "lora_all_r4"
    half = summary["verdicts"]["strato_knapsack_b0.5"]
    assert half["wall_reference"] == "lora_all_r4" and half["wall_time_ratio"] == pytest.approx(1.1)
    assert summary["arms"]["strato_knapsack_b0.5"]["mean"] == pytest.approx(73.5)


def test_summary_of_several_runs_folders_judges_the_whole_curve(bench, tmp_path, capsys):
    """Budgets run on different days sit in different folders; --summarize-only over all of them gives one curve,
    and training into several folders is refused."""
    import json

    from test_compare import write_config

    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    for r, b in ((1, 0.125), (2, 0.25), (4, 0.5), (8, 1.0), (16, 2.0)):
        folder = (day1 if r <= 4 else day2) / "tweets"
        write_config(folder, f"lora_all_r{r}", [0.70 + r / 1000] * 2, trainable=r * R1, wall=100.0)
        write_config(folder, f"strato_knapsack_b{b}", [0.7005 + r / 1000] * 2, trainable=r * R1, wall=100.0)
    out = tmp_path / "summary"
    assert bench.main(["--summarize-only", "--runs-dir", str(day1), str(day2), "--out", str(out)]) == 0
    curve = json.loads(out.with_suffix(".json").read_text())["tasks"]["tweets"]["curve"]
    assert sorted(map(float, curve["points"])) == [0.125, 0.25, 0.5, 1.0, 2.0]
    assert curve["beats_whole_curve"] is True  # +0.05 points at every budget; one folder alone has no verdict
    before = out.with_suffix(".json").read_text()
    with pytest.raises(SystemExit):  # an earlier report is replaced only on request, and left as it was
        bench.main(["--summarize-only", "--runs-dir", str(day1), "--out", str(out)])
    assert "--overwrite" in capsys.readouterr().err and out.with_suffix(".json").read_text() == before
    assert bench.main(["--summarize-only", "--runs-dir", str(day1), "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["tasks"]["tweets"]["curve"]["beats_whole_curve"] is None
    with pytest.raises(SystemExit):
        bench.main(["--task", "tweets", "--runs-dir", str(day1), str(day2), "--out", str(out)])
    # --arms with --summarize-only: the summary covers those arms alone
    assert bench.main(["--summarize-only", "--arms", "lora_all_r1", "strato_knapsack_b0.125", "--runs-dir", str(day1),
                       str(day2), "--out", str(out), "--overwrite"]) == 0
    tweets = json.loads(out.with_suffix(".json").read_text())["tasks"]["tweets"]
    assert sorted(tweets["arms"]) == ["lora_all_r1", "strato_knapsack_b0.125"]
    assert list(map(float, tweets["curve"]["points"])) == [0.125]


def test_report_command_is_quoted_so_it_copy_pastes_into_a_shell(bench, monkeypatch):
    """A --note with spaces must come back as one argument when the recorded command is split the way a shell does."""
    import argparse
    import shlex

    from common import provenance

    note = "code abc (1 thread); two runs side by side"
    monkeypatch.setattr(sys, "argv", ["bench/strato_vs_baselines.py", "--summarize-only", "--note", note])
    command = provenance(argparse.Namespace())["command"]
    assert shlex.split(command)[1:] == ["bench/strato_vs_baselines.py", "--summarize-only", "--note", note]


def test_learning_rate_flag_changes_the_lr_and_the_run_name_only(bench, bench_arms, tmp_path):
    """--learning-rate (choosing a method's lr on validation rows) trains at that lr into <arm>_lr<LR>_seed<N>."""
    table = bench.arms("tweets")
    shared = bench.TASKS["tweets"]["base"]["training"]["learning_rate"]
    cfg = bench_arms.arm_config("tweets", "adalora_r4", table["adalora_r4"], 42, tmp_path, learning_rate=5e-3)
    assert cfg.training.learning_rate == 5e-3 and cfg.peft.method == "adalora" and cfg.peft.rank == 4
    assert cfg.logging.run_name == "adalora_r4_lr0.005_seed42"
    plain = bench_arms.arm_config("tweets", "adalora_r4", table["adalora_r4"], 42, tmp_path, lr_protocol="shared")
    assert plain.training.learning_rate == shared and plain.logging.run_name == "adalora_r4_seed42"
    assert bench.TASKS["tweets"]["base"]["training"]["learning_rate"] == shared  # the task's table is not changed


@pytest.mark.parametrize("task", ["tweets", "addition"])
def test_tuned_protocol_trains_each_arm_at_its_validation_lr_under_its_plain_name(bench, bench_arms, tmp_path, task):
    """The default protocol: every frontier rank at LoRA's tuned lr, every STRATO arm at STRATO's, an arm without a
    tuned lr at the task's; run names carry no lr (the lr is in the run's config and the summary)."""
    table, shared = bench.arms(task), bench.TASKS[task]["base"]["training"]["learning_rate"]
    lrs = {name: bench_arms.arm_config(task, name, table[name], 43, tmp_path).training.learning_rate
           for name in ("lora_all_r1", "lora_all_r16", "strato_knapsack_b0.5", "strato_uniform_b0.5_nosched")}
    assert lrs["lora_all_r1"] == lrs["lora_all_r16"] == bench_arms.arm_learning_rate(task, "lora_all_r4") != shared
    assert lrs["strato_knapsack_b0.5"] == lrs["strato_uniform_b0.5_nosched"] != shared
    gradient = bench_arms.arm_config(task, "strato_knapsack_b0.5_gradient", table["strato_knapsack_b0.5_gradient"], 43,
                                tmp_path)
    assert gradient.peft.strato.init == "gradient" and gradient.training.learning_rate < lrs["strato_knapsack_b0.5"]
    untuned = [n for n in table if not any(re.fullmatch(p, n) for p, _ in bench_arms.TUNED_LR[task])]
    for name in untuned:
        assert bench_arms.arm_config(task, name, table[name], 43, tmp_path).training.learning_rate == shared
    cfg = bench_arms.arm_config(task, "lora_all_r4", table["lora_all_r4"], 43, tmp_path)
    assert cfg.logging.run_name == "lora_all_r4_seed43"
    assert all(bench_arms.arm_learning_rate(task, n, "shared") == shared for n in table)
    with pytest.raises(ValueError, match="lr protocol"):
        bench_arms.arm_learning_rate(task, "lora_all_r4", "best")


def test_a_complete_run_at_another_lr_is_an_error_not_a_skip(bench, bench_arms, tmp_path, capsys):
    """A folder of runs made under the shared lr cannot pass for tuned runs of the same name: the arm fails with a
    message naming the arm and both lrs, nothing is trained, and a run at the right lr is skipped as complete."""
    from strato_peft.outputs import COMPLETE_MARKER, run_dir_for

    table = bench.arms("tweets")
    for protocol in ("shared", "tuned"):
        cfg = bench_arms.arm_config("tweets", "lora_all_r4", table["lora_all_r4"], 42, tmp_path / protocol,
                               lr_protocol=protocol)
        final = run_dir_for(cfg)
        final.mkdir(parents=True)
        (final / COMPLETE_MARKER).write_text("")
        (final / "config_used.yaml").write_text(f"training:\n  learning_rate: {5e-4}\n")
    log = bench.run_arms("tweets", ["lora_all_r4"], [42], tmp_path / "tuned")
    assert log[0]["status"] == "failed" and str(final) in log[0]["error"]  # the run named
    wanted = bench_arms.arm_learning_rate("tweets", "lora_all_r4")
    assert f"training.learning_rate: 0.0005 -> {wanted}" in log[0]["error"] and "lora_all_r4" in log[0]["error"]
    assert bench.run_arms("tweets", ["lora_all_r4"], [42], tmp_path / "shared", lr_protocol="shared") == []
    assert "[skip] lora_all_r4 seed 42: complete" in capsys.readouterr().out


def test_summary_reports_each_arms_learning_rates_and_scheduler(bench, tmp_path):
    """The lr column and whether the scheduler ran come from the runs' own configs, so a summary of a mixed folder
    shows them (the scheduler's default changed: the arm's name does not say)."""
    from test_compare import write_config

    write_config(tmp_path, "lora_all_r4", [0.72, 0.71], trainable=4 * R1)
    write_config(tmp_path, "strato_knapsack_b0.5", [0.74, 0.73], trainable=4 * R1)
    for seed, lr in ((42, 2e-3), (43, 1e-3)):
        (tmp_path / "m" / "t" / f"lora_all_r4_seed{seed}" / "config_used.yaml").write_text(
            f"training:\n  learning_rate: {lr}\n")
    (tmp_path / "m" / "t" / "strato_knapsack_b0.5_seed42" / "config_used.yaml").write_text(
        "peft:\n  strato:\n    scheduler: false\n")
    summary = bench.summarize("tweets", tmp_path)
    assert summary["arms"]["lora_all_r4"]["learning_rates"] == [1e-3, 2e-3]
    assert summary["arms"]["strato_knapsack_b0.5"]["learning_rates"] == []  # configs without a training section
    assert summary["arms"]["strato_knapsack_b0.5"]["scheduler"] == [False]  # seed 43's config says nothing
    assert summary["arms"]["lora_all_r4"]["scheduler"] == []
    table = bench.markdown("tweets", summary)
    assert "| lora_all_r4 | 2 | 0.001 / 0.002 |" in table and "| strato_knapsack_b0.5 | 2 | n/a |" in table


@pytest.mark.parametrize("task", ["tweets", "addition"])
def test_top_half_arm_adapts_exactly_the_linear_layers_all_linear_would_in_the_top_half(bench, bench_arms, task):
    """lora_top_half_r<r> (the 'adapt the top' placement STRATO's low budgets are checked against): every module
    peft's all-linear picks in the upper half of the layers, the pooler on tweets, and nothing else."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    if task == "tweets":  # MiniLM-L6's shape, tiny widths
        model, n_layers, task_type = BertForSequenceClassification(BertConfig(
            hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64, num_labels=3)), 6, "SEQ_CLS"
    else:  # SmolLM2-135M's 30 layers, tiny widths
        model, n_layers, task_type = LlamaForCausalLM(LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=30, num_attention_heads=2, num_key_value_heads=1,
            vocab_size=64)), 30, "CAUSAL_LM"

    def adapted(targets: str) -> set[str]:
        import copy

        peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=1, target_modules=targets, task_type=task_type))
        return {n.removeprefix("base_model.model.") for n, m in peft_model.named_modules() if hasattr(m, "lora_A")
                and "modules_to_save" not in n}

    everything = adapted("all-linear")
    top = {n for n in everything if "pooler" in n
           or int(re.search(r"\.layers?\.(\d+)\.", n).group(1)) >= n_layers // 2}
    arm = bench.arms(task)["lora_top_half_r1"]
    assert adapted(arm["target_modules"]) == top and 0 < len(top) < len(everything)
    assert bench_arms.arm_learning_rate(task, "lora_top_half_r2") == bench_arms.arm_learning_rate(task, "lora_all_r2")


def test_arms_from_an_earlier_results_file_join_the_runs_and_pairs_compare_seed_by_seed(bench, tmp_path):
    """Run folders can be lost (another machine); a committed results file keeps each arm's per-seed scores, so a
    new arm's runs are still compared with the old arms seed by seed; an arm with runs is never replaced."""
    import json

    from test_compare import write_config

    old = tmp_path / "old"
    write_config(old / "tweets", "lora_all_r1", [0.700, 0.710, 0.690], trainable=R1, wall=100.0)
    write_config(old / "tweets", "lora_top_half_r1", [0.600, 0.600, 0.600], trainable=R1 // 2, wall=90.0)
    earlier = tmp_path / "earlier"
    assert bench.main(["--summarize-only", "--runs-dir", str(old), "--out", str(earlier)]) == 0
    new = tmp_path / "new"
    write_config(new / "tweets", "lora_top_half_r1", [0.720, 0.730, 0.710], trainable=R1 // 2, wall=90.0)
    out = tmp_path / "summary"
    assert bench.main(["--summarize-only", "--runs-dir", str(new), "--out", str(out), "--earlier-results",
                       str(earlier.with_suffix(".json")), "--pairs", "lora_top_half_r1:lora_all_r1",
                       "lora_top_half_r1:lora_all_r16"]) == 0
    tweets = json.loads(out.with_suffix(".json").read_text())["tasks"]["tweets"]
    assert tweets["earlier"] == {"lora_all_r1": {str(earlier.with_suffix(".json")): [42, 43, 44]}}
    assert tweets["arms"]["lora_top_half_r1"]["mean"] == pytest.approx(72.0)  # the new runs, not the file's 60.0
    pair = tweets["pairs"]["lora_top_half_r1 - lora_all_r1"]
    assert pair["paired_seeds"] == 3 and pair["paired_gain"] == pytest.approx(2.0)
    assert pair["paired_gain_std"] == pytest.approx(0.0, abs=1e-9) and pair["a"] == pytest.approx(72.0)
    assert tweets["pairs"]["lora_top_half_r1 - lora_all_r16"] == {"error": "no runs of lora_all_r16"}
    report = out.with_suffix(".md").read_text()
    assert "| lora_top_half_r1 - lora_all_r1 | 3 | 72.00 | 70.00 |" in report and "earlier results" in report
    assert pair["ahead"] == 3 and pair["per_seed"]["43"] == {"a": pytest.approx(73.0), "b": pytest.approx(71.0)}
    assert pair["median_gain"] == pytest.approx(2.0) and pair["wilcoxon_p"] == pytest.approx(0.25)  # exact, n = 3
    assert ("Per seed, lora_top_half_r1 - lora_all_r1: a ahead on 3 of 3 seeds; median a - b +2.00, Wilcoxon "
            "signed-rank p 0.25 (a rank test") in report
    assert "| 43 | 73.00 | 71.00 | +2.00 |" in report
    with pytest.raises(SystemExit, match="no 'tasks' in it"):
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        bench.main(["--summarize-only", "--runs-dir", str(new), "--out", str(out), "--earlier-results", str(bad),
                    "--overwrite"])
    with pytest.raises(SystemExit):  # A:B or nothing
        bench.main(["--summarize-only", "--runs-dir", str(new), "--out", str(out), "--pairs", "lora_all_r1",
                    "--overwrite"])


def test_a_summary_is_made_again_from_a_results_file_alone_with_every_verdict_recomputed(bench, tmp_path):
    """Run folders go with a machine; --summarize-only with --earlier-results and no run at hand makes the task's
    summary again from the file's per-seed scores and costs (so a verdict added since, the line between two ranks,
    is judged on old results); no runs and no file holding the task is a one-line error, not compare's traceback."""
    import json

    from test_compare import write_config

    old = tmp_path / "old"
    for r, scores in ((4, [0.72, 0.71, 0.73]), (8, [0.76, 0.75, 0.77])):
        write_config(old / "tweets", f"lora_all_r{r}", scores, trainable=r * R1, wall=100.0)
    write_config(old / "tweets", "strato_knapsack_b0.75", [0.76, 0.76, 0.76], trainable=6 * R1, wall=105.0)
    earlier = tmp_path / "earlier"
    assert bench.main(["--summarize-only", "--runs-dir", str(old), "--out", str(earlier)]) == 0
    made = json.loads(earlier.with_suffix(".json").read_text())["tasks"]["tweets"]
    for point in made["curve"]["points"].values():
        point.pop("line")  # as a file written before the line bar holds it
    earlier.with_suffix(".json").write_text(json.dumps({"tasks": {"tweets": made}}))
    empty = tmp_path / "none"
    out = tmp_path / "again"
    assert bench.main(["--summarize-only", "--task", "tweets", "--runs-dir", str(empty), "--out", str(out),
                       "--earlier-results", str(earlier.with_suffix(".json"))]) == 0
    again = json.loads(out.with_suffix(".json").read_text())["tasks"]["tweets"]
    assert again["arms"]["lora_all_r8"]["seed_scores"] == {"42": 76.0, "43": 75.0, "44": 77.0}
    assert again["comparison"]["baseline"] == "lora_all_r8" and again["comparison"]["metric"]["name"] == "eval_accuracy"
    point = again["curve"]["points"]["0.75"]
    assert point["score"] == pytest.approx(76.0) and point["line"]["score"] == pytest.approx(74.0)  # halfway: r4 72 .. r8 76
    assert point["line"]["margin"] == pytest.approx(2.0) and point["line"]["low"] == "lora_all_r4"
    assert again["verdicts"]["strato_knapsack_b0.75"]["wall_time_ratio"] == pytest.approx(1.05)
    (empty / "tweets").mkdir(parents=True)  # a task folder with no run in it: the same one-line refusal
    with pytest.raises(SystemExit, match="tweets: no run under .* and no --earlier-results file holds this task"):
        bench.main(["--summarize-only", "--task", "tweets", "--runs-dir", str(empty), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x.json").exists()


def test_earlier_results_add_the_seeds_the_runs_lack_and_every_statistic_is_over_all_seeds(bench, tmp_path):
    """Seed 42 of an arm in a committed results file and seeds 43-44 in new runs make one arm of three seeds (mean,
    std, per-seed walls, original criteria against the reference's three seeds); a seed with a run is never taken
    from the file; an arm trained at another lr there is refused, not mixed."""
    import json

    from test_compare import write_config

    old = tmp_path / "old"
    write_config(old / "tweets", "lora_all_r8", [0.75], trainable=8 * R1, wall=200.0)
    write_config(old / "tweets", "lora_all_r1", [0.70, 0.71, 0.69], trainable=R1, wall=100.0)
    write_config(old / "tweets", "lora_top_half_r1", [0.60], trainable=R1 // 2, wall=90.0)
    earlier = tmp_path / "earlier"
    assert bench.main(["--summarize-only", "--runs-dir", str(old), "--out", str(earlier)]) == 0
    earlier_json = earlier.with_suffix(".json")
    assert json.loads(earlier_json.read_text())["tasks"]["tweets"]["arms"]["lora_all_r8"]["seed_costs"]["42"][
        "wall_seconds"] == 200.0
    new = tmp_path / "new"
    write_config(new / "tweets", "lora_all_r8", [0.77, 0.76], seeds=[43, 44], trainable=8 * R1, wall=300.0)
    write_config(new / "tweets", "lora_top_half_r1", [0.72], trainable=R1 // 2, wall=90.0)
    out = tmp_path / "summary"
    assert bench.main(["--summarize-only", "--runs-dir", str(new), "--out", str(out), "--earlier-results",
                       str(earlier_json)]) == 0
    tweets = json.loads(out.with_suffix(".json").read_text())["tasks"]["tweets"]
    assert tweets["earlier"] == {"lora_all_r8": {str(earlier_json): [42]},
                                 "lora_all_r1": {str(earlier_json): [42, 43, 44]}}
    r8 = tweets["arms"]["lora_all_r8"]
    assert r8["seed_scores"] == {"42": 75.0, "43": 77.0, "44": 76.0} and r8["n"] == 3
    assert r8["mean"] == pytest.approx(76.0) and r8["std"] == pytest.approx(1.0)
    assert r8["wall_seconds"] == pytest.approx((200.0 + 300.0 + 300.0) / 3) and r8["params"] == 8 * R1
    assert r8["original_criteria"]["stability"]["figures"]["n"] == 3
    assert tweets["arms"]["lora_top_half_r1"]["seed_scores"] == {"42": 72.0}  # its run, not the file's 60.0
    # every arm is judged against the reference over all its seeds (the file judged r1 against r8's seed 42 alone)
    accuracy = tweets["arms"]["lora_all_r1"]["original_criteria"]["accuracy"]["figures"]
    assert accuracy["baseline_mean"] == pytest.approx(76.0) and accuracy["gain"] == pytest.approx(-6.0)
    assert tweets["comparison"]["baseline"] == "lora_all_r8"
    report = out.with_suffix(".md").read_text()
    assert f"lora_all_r1 seeds 42, 43, 44 ({earlier_json})" in report and f"lora_all_r8 seed 42 ({earlier_json})" in report
    assert "| lora_all_r8 | 3 |" in report

    for run in (new / "tweets").glob("*/*/lora_all_r8_seed*"):
        (run / "config_used.yaml").write_text(f"seed: {run.name[-2:]}\ntraining:\n  learning_rate: 0.0005\n")
    data = json.loads(earlier_json.read_text())
    data["tasks"]["tweets"]["arms"]["lora_all_r8"]["learning_rates"] = [0.002]
    earlier_json.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="arm lora_all_r8 has learning_rates"):
        bench.main(["--summarize-only", "--runs-dir", str(new), "--out", str(out), "--earlier-results",
                    str(earlier_json), "--overwrite"])


def test_failed_runs_exit_nonzero_and_no_runs_at_all_write_no_report(bench, tmp_path, monkeypatch, capsys):
    """Every run failing (e.g. a data file missing) ends with a one-line error and exit 1, leaving an earlier report
    at --out as it was; with some runs complete the report covers them and the exit is still 1."""
    from test_compare import write_config

    failed = [{"arm": "lora_all_r2", "seed": 42, "status": "failed", "error": "data file missing"}]
    monkeypatch.setattr(bench, "run_arms", lambda *a, **k: list(failed))
    out = tmp_path / "report"
    out.with_suffix(".md").write_text("earlier report")
    runs = tmp_path / "runs"
    assert bench.main(["--task", "tweets", "--arms", "lora_all_r2", "--runs-dir", str(runs), "--out", str(out),
                       "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "no complete runs under" in err and "tweets lora_all_r2 seed 42" in err and "no report written" in err
    assert out.with_suffix(".md").read_text() == "earlier report" and not out.with_suffix(".json").exists()

    write_config(runs / "tweets", "lora_all_r1", [0.70, 0.71], trainable=R1, wall=100.0)
    assert bench.main(["--task", "tweets", "--arms", "lora_all_r2", "--runs-dir", str(runs), "--out", str(out),
                       "--overwrite"]) == 1
    assert "lora_all_r1" in out.with_suffix(".md").read_text() and out.with_suffix(".json").is_file()
    assert "failed runs (the report covers the complete ones): tweets lora_all_r2 seed 42" in capsys.readouterr().err


def test_each_run_is_its_own_process_of_the_benchmark_cli_with_the_arms_settings(bench_runs, tmp_path, monkeypatch):
    """An isolated run re-invokes bench/strato_vs_baselines.py --in-process for one arm and seed, with the lr protocol,
    validation rows and lr passed on; a child that fails is recorded and the next run still goes."""
    import subprocess

    calls = []

    def fake_run(argv, check):
        calls.append(argv)
        if "43" in argv:
            raise subprocess.CalledProcessError(3, argv)

    monkeypatch.setattr(subprocess, "run", fake_run)
    runs = tmp_path / "runs"
    log = bench_runs.run_arms("tweets", ["lora_all_r1"], [42, 43, 44], runs / "tweets", validation=400,
                              learning_rate=1e-3, lr_protocol="shared")
    assert [e["status"] for e in log] == ["done", "failed", "done"] and "code 3" in log[1]["error"]
    argv = calls[0]
    assert Path(argv[1]) == bench_runs.CLI and bench_runs.CLI.name == "strato_vs_baselines.py"
    assert bench_runs.CLI.is_file()
    assert argv[2:] == ["--task", "tweets", "--arms", "lora_all_r1", "--seeds", "42", "--runs-dir", str(runs),
                        "--in-process", "--lr-protocol", "shared", "--validation", "400", "--learning-rate", "0.001"]


# --- STRATO arms whose run is a LoRA run (bench/shared_runs.py) -----------------------------------------------------

def _lora_run(bench_arms, tmp_path, arm: str, seed: int, modules: list[str]):
    """A complete run folder of ``arm`` where the benchmark looks for it, with an adapter file over ``modules``."""
    import torch
    from safetensors.torch import save_file

    from strato_peft.outputs import COMPLETE_MARKER, run_dir_for, write_config

    cfg = bench_arms.arm_config("tweets", arm, bench_arms.arms("tweets")[arm], seed, tmp_path)
    final = run_dir_for(cfg)
    (final / "adapter").mkdir(parents=True)
    save_file({f"base_model.model.{m}.lora_{x}.weight": torch.zeros(1) for m in modules for x in "AB"},
              str(final / "adapter" / "adapter_model.safetensors"))
    write_config(final / "config_used.yaml", cfg)
    (final / COMPLETE_MARKER).write_text("{}")
    return cfg, final


MODULES = [f"bert.encoder.layer.{i}.attention.self.{k}" for i in range(2) for k in ("query", "key", "value")]


def _plan(rank: int = 4, searched: bool = False, modules=MODULES, alpha: float = 16 / 2) -> dict:
    return {"search": {"searched": searched, "skipped": None if searched else "map gain 0.002 < min_map_gain 0.05",
                       "total_seconds": 5.0, "map_gain": 0.002},
            "allocation": {m: rank for m in modules}, "rslora_alpha": alpha, "modules": len(modules),
            "total_rank": rank * len(modules)}


def test_a_strato_run_is_a_lora_run_only_when_every_condition_holds(bench, bench_arms, tmp_path):
    """Gate closed + uniform rank r on LoRA's modules + LoRA's scale + no scheduler + peft's start + the same
    training settings: no difference. Each condition broken alone is named."""
    import shared_runs

    lora_cfg, lora = _lora_run(bench_arms, tmp_path, "lora_all_r4", 42, MODULES)
    table = bench.arms("tweets")

    def cfg(arm="strato_knapsack_b0.5", **kw):
        return bench_arms.arm_config("tweets", arm, table[arm], 42, tmp_path, **kw)

    assert shared_runs.differences(cfg(), _plan(), lora_cfg, lora) == []
    cases = [(cfg(), _plan(searched=True), "the search ran"),
             (cfg(), _plan(rank=2), "are not 4 on every module"),
             (cfg("strato_knapsack_b0.5_sched"), _plan(), "scheduler is on"),
             (cfg("strato_knapsack_b0.5_gradient"), _plan(), "init is gradient"),
             (cfg(), _plan(alpha=16.0), "is not LoRA's"),
             (cfg(), _plan(modules=MODULES[:-1]), "modules differ"),
             (cfg(learning_rate=1e-3), _plan(), "training.learning_rate")]
    for strato_cfg, plan, needle in cases:
        why = shared_runs.differences(strato_cfg, plan, lora_cfg, lora)
        assert any(needle in w for w in why), (needle, why)

    # PPO where the gate skipped its search trains what the knapsack arm of its budget trains (rank 5: no LoRA arm)
    ppo, knapsack = cfg("strato_ppo_b0.7"), cfg("strato_knapsack_b0.7")
    r5 = _plan(rank=5, alpha=16 / math.sqrt(5))
    assert shared_runs.strato_differences(ppo, r5, knapsack, r5) == []
    assert "the search ran in the other" in shared_runs.strato_differences(ppo, r5, knapsack, _plan(searched=True))
    assert "the allocations differ" in shared_runs.strato_differences(ppo, r5, knapsack, _plan(rank=4))
    assert any("peft.budget" in w for w in shared_runs.strato_differences(ppo, r5, cfg(), r5))


def test_share_runs_records_instead_of_training_and_the_summary_gives_the_shared_scores(bench, bench_arms, tmp_path,
                                                                                       monkeypatch, capsys):
    import shared_runs

    plans = []
    monkeypatch.setattr(shared_runs, "plan_for", lambda cfg, runs_dir, name: plans.append(name) or _plan())
    runs = tmp_path / "runs" / "tweets"
    _lora_run(bench_arms, runs, "lora_all_r4", 42, MODULES)
    trained = []
    monkeypatch.setattr("subprocess.run", lambda *a, **k: trained.append(a))  # no training may start
    log = bench.run_arms("tweets", ["strato_knapsack_b0.5", "strato_knapsack_b0.5_sched"], [42], runs,
                         share=True)
    shared, other = log
    assert shared["status"] == "shared" and shared["same_as"].endswith("lora_all_r4_seed42")
    assert other["status"] == "done" and len(trained) == 1  # the scheduler arm trains (the stub stands in)
    assert "scheduler is on" in capsys.readouterr().out
    entry = json.loads((runs / "shared" / "strato_knapsack_b0.5_seed42.json").read_text())
    assert entry["same_arm"] == "lora_all_r4" and entry["search_seconds"] == 5.0
    assert bench.run_arms("tweets", ["strato_knapsack_b0.5"], [42], runs, share=True)[0]["status"] == "shared"
    assert plans == ["strato_knapsack_b0.5_seed42", "strato_knapsack_b0.5_sched_seed42"]  # recorded: no new plan
    # PPO at 0.7x (rank 5, no LoRA arm): the knapsack arm's complete run of that budget, by its recorded plan
    r5 = _plan(rank=5, alpha=16 / math.sqrt(5))
    _, knapsack = _lora_run(bench_arms, runs, "strato_knapsack_b0.7", 42, MODULES)
    (knapsack / "adapter" / "strato_plan.json").write_text(json.dumps(r5))
    monkeypatch.setattr(shared_runs, "plan_for", lambda cfg, runs_dir, name: r5)
    ppo = bench.run_arms("tweets", ["strato_ppo_b0.7"], [42], runs, share=True)[0]
    assert ppo["status"] == "shared" and ppo["same_as"] == str(knapsack)
    # a partner run trained with other settings than its arm has now is no partner
    _, stale = _lora_run(bench_arms, runs, "lora_all_r8", 42, MODULES)
    (stale / "config_used.yaml").write_text((stale / "config_used.yaml").read_text().replace(
        "learning_rate: 0.002", "learning_rate: 0.0005"))
    monkeypatch.setattr(shared_runs, "plan_for", lambda cfg, runs_dir, name: _plan(rank=8, alpha=16 / math.sqrt(8)))
    capsys.readouterr()
    assert bench.run_arms("tweets", ["strato_knapsack_b1.0"], [42], runs, share=True)[0]["status"] == "done"
    assert "lora_all_r8: its run was trained with other settings (training.learning_rate" in capsys.readouterr().out

    costs = {"params": 4000, "adapter_flops": 8000, "peak_memory_bytes": None}
    arms_ = {"lora_all_r4": {"n": 2, "mean": 74.5, "std": 0.7, "seed_scores": {42: 75.0, 43: 74.0}, "params": 4000,
                             "wall_seconds": 110.0, "original_criteria": {}, "held_out_examples": 1000,
                             "seed_costs": {42: {**costs, "wall_seconds": 100.0}, 43: {**costs, "wall_seconds": 120.0}}},
             "strato_knapsack_b0.7": {"n": 1, "mean": 70.0, "std": None, "seed_scores": {42: 70.0}, "params": 5000,
                                      "wall_seconds": 90.0, "original_criteria": {}}}
    entries = [{"arm": "strato_knapsack_b0.5", "seed": s, "same_arm": "lora_all_r4", "search_seconds": 5.0}
               for s in (42, 43)]
    entries += [{"arm": "strato_knapsack_b0.7", "seed": 43, "same_arm": "lora_all_r4", "search_seconds": 5.0},
                {"arm": "strato_ppo_b0.5", "seed": 44, "same_arm": "lora_all_r4", "search_seconds": 5.0}]
    merged = shared_runs.merge(arms_, entries, 100.0)
    assert merged == {"strato_knapsack_b0.5": {42: "lora_all_r4", 43: "lora_all_r4"}}
    got = arms_["strato_knapsack_b0.5"]
    assert got["seed_scores"] == {42: 75.0, 43: 74.0} and got["mean"] == pytest.approx(74.5)
    # each seed's wall is that seed's run's plus the search's
    assert got["std"] == pytest.approx(math.sqrt(0.5)) and got["wall_seconds"] == 115.0 and got["params"] == 4000
    assert got["seed_costs"][43]["wall_seconds"] == 125.0 and got["original_criteria"] is None
    assert got["sampling_error"] == pytest.approx(100 * math.sqrt(0.745 * 0.255 / 1000))
    assert arms_["strato_knapsack_b0.7"]["seed_scores"] == {42: 70.0}  # runs of its own: left as they are
    assert "strato_ppo_b0.5" not in arms_  # the LoRA run of seed 44 is not there


def test_write_report_replaces_an_earlier_report_only_when_asked(bench, tmp_path):
    """Every benchmark writes through common.write_report: an existing <out>.json/.md is an error unless overwrite,
    and the earlier report stays as it was."""
    import common

    out = tmp_path / "report"
    result = {"command": "python bench/x.py", "machine": {"device": "cpu"}, "value": 1}
    common.write_report(out, result, "title", "first")
    with pytest.raises(FileExistsError, match="report.json"):
        common.write_report(out, {**result, "value": 2}, "title", "second")
    assert "first" in out.with_suffix(".md").read_text() and '"value": 1' in out.with_suffix(".json").read_text()
    common.write_report(out, {**result, "value": 2}, "title", "second", overwrite=True)
    assert "second" in out.with_suffix(".md").read_text() and '"value": 2' in out.with_suffix(".json").read_text()
    assert common.existing_report(tmp_path / "none") == []
    # dotted names keep their dots (Path.with_suffix would write run_b0.json for both of these)
    for name in ("run_b0.5", "run_b0.7"):
        common.write_report(tmp_path / name, result, "title", name)
    assert (tmp_path / "run_b0.5.md").read_text().endswith("run_b0.5") and (tmp_path / "run_b0.7.json").is_file()
    assert not (tmp_path / "run_b0.json").exists()
    assert common.report_file(tmp_path / "x.json", ".md") == tmp_path / "x.md"


def test_map_agreement_ranks_a_map_against_trained_updates(bench, tmp_path):
    """bench/map_agreement.py: each module's update energy is |scale * B A|^2 with the adapter's own scale (rank_pattern,
    rsLoRA), and the map and runs are compared by Spearman overall and within a module type."""
    import json

    import torch
    from safetensors.torch import save_file

    import map_agreement

    names = [f"model.layers.{i}.self_attn.{p}" for i in range(4) for p in ("q_proj", "v_proj")]
    g = torch.Generator().manual_seed(0)

    def adapter(run, ranks, rslora, grow):
        tensors = {}
        for k, n in enumerate(names):
            r = ranks.get(n, 2)
            tensors[f"base_model.model.{n}.lora_A.weight"] = torch.randn(r, 6, generator=g)
            tensors[f"base_model.model.{n}.lora_B.weight"] = torch.randn(5, r, generator=g) * (1 + k) ** grow
        (run / "adapter").mkdir(parents=True)
        save_file(tensors, str(run / "adapter" / "adapter_model.safetensors"))
        (run / "adapter" / "adapter_config.json").write_text(json.dumps(
            {"r": 2, "lora_alpha": 4, "use_rslora": rslora, "rank_pattern": ranks, "alpha_pattern": {}}))
        return tensors

    one, two = tmp_path / "one", tmp_path / "two"
    tensors = adapter(one, {names[0]: 3}, True, 3)
    adapter(two, {}, False, 3)
    energy = map_agreement.update_energy(one)
    a, b = tensors[f"base_model.model.{names[0]}.lora_A.weight"], tensors[f"base_model.model.{names[0]}.lora_B.weight"]
    assert energy[names[0]] == pytest.approx(float(((4 / 3 ** 0.5) * b @ a).pow(2).sum()), rel=1e-5)
    assert set(energy) == set(names)
    grow, shrink = tmp_path / "grow.json", tmp_path / "shrink.json"
    grow.write_text(json.dumps({"spectra": {n: [float(k + 1)] for k, n in enumerate(names)}}))
    shrink.write_text(json.dumps({"spectra": {n: [float(len(names) - k)] for k, n in enumerate(names)}}))
    up = map_agreement.agreement(grow, [one, two], rank=1)
    down = map_agreement.agreement(shrink, [one, two], rank=1)
    # B grows as (1+k)^3 with the module index: energy is ordered as the "grow" map (up to the random draws)
    assert up["rows"][0]["a"] == "map" and up["rows"][0]["all"] > 0.8 and down["rows"][0]["all"] < -0.8
    assert up["types"] == ["q_proj", "v_proj"] and up["rows"][0]["by_type"]["q_proj"] is not None
    assert [(r["a"], r["b"]) for r in up["rows"]] == [("map", "one"), ("map", "two"), ("one", "two")]
    assert "| map | one |" in map_agreement.render(up)


def test_merge_results_writes_one_report_of_each_tasks_file_as_it_holds_it(bench, tmp_path, capsys):
    """Tweets and addition reports from their own runs folders merge into one report: each task's section is the
    one its own report printed (seeds and budgets back to numbers after JSON), its source recorded; a task in two
    files, a task in none, or runs folders beside --merge-results are refused by name."""
    import json

    from test_compare import write_run

    def write(folder, name, values, task, **kw):  # addition is scored by exact match, tweets by accuracy
        for seed, v in zip((42, 43), values):
            extra = {"eval_results": {"tasks": {"exact_match": {"metrics": {"exact_match": v}}}}} \
                if task == "addition" else {}
            write_run(folder, f"{name}_seed{seed}", acc=v, **extra, **kw)

    for task, base in (("tweets", 0.70), ("addition", 0.90)):
        folder = tmp_path / f"runs_{task}" / task
        for r, b in ((1, 0.125), (2, 0.25), (4, 0.5), (8, 1.0), (16, 2.0)):
            write(folder, f"lora_all_r{r}", [base + r / 1000, base + r / 900], task, trainable=r * R1, wall=100.0)
            write(folder, f"strato_knapsack_b{b}", [base + r / 1000 + 0.001, base + r / 900], task, trainable=r * R1,
                  wall=105.0)
        assert bench.main(["--summarize-only", "--task", task, "--runs-dir", str(tmp_path / f"runs_{task}"),
                           "--out", str(tmp_path / task)]) == 0
    capsys.readouterr()
    files = [str(tmp_path / "tweets.json"), str(tmp_path / "addition.json")]
    out = tmp_path / "merged"
    assert bench.main(["--merge-results", *files, "--out", str(out)]) == 0
    merged = json.loads(out.with_suffix(".json").read_text())
    assert sorted(merged["tasks"]) == ["addition", "tweets"] and out.with_suffix(".png").is_file()
    assert merged["sources"]["addition"]["file"] == files[1]
    assert merged["sources"]["addition"]["command"] == json.loads(Path(files[1]).read_text())["command"]
    text = out.with_suffix(".md").read_text()
    for task in ("tweets", "addition"):
        own = (tmp_path / f"{task}.md").read_text()
        section = own[own.index(f"## Task {task}"):].strip()
        assert section in text  # every table and verdict as the task's own report has it
        assert merged["tasks"][task]["curve"]["beats_whole_curve"] is True
    # a merged file merges again, keeping where each task came from
    again = tmp_path / "again"
    assert bench.main(["--merge-results", str(out.with_suffix(".json")), "--out", str(again)]) == 0
    assert json.loads(again.with_suffix(".json").read_text())["sources"]["tweets"]["file"] == files[0]
    for argv, message in ((["--merge-results", files[0], files[0]], "task tweets is in"),
                          (["--merge-results", files[0]], "no file given holds task(s) addition"),
                          (["--merge-results", *files, "--runs-dir", str(tmp_path)], "--merge-results takes")):
        with pytest.raises(SystemExit) as refused:  # our message, or argparse's on stderr
            bench.main([*argv, "--out", str(tmp_path / "refused")])
        assert message in str(refused.value.code) + capsys.readouterr().err
    assert not (tmp_path / "refused.json").exists()
