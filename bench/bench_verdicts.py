"""The verdicts of bench/strato_vs_baselines.py: the original criteria, the issue's higher bar at 0.5x, STRATO
along LoRA's whole curve (the staircase and the straight line between ranks), seed-paired calls, the scheduler's
worth."""

from __future__ import annotations

import re
from typing import Any, Optional

from bench_arms import CURVE_BUDGETS, FRONTIER_RANKS, REFERENCE_ARM

# a LoRA rank counts as "at STRATO's cost" up to 1% more params: a budget of k x r8's adapter params is LoRA r(8k)'s
# exactly, but the greedy fill may leave a few hundred params unspent (0.125x on tweets: 43,139 vs r1's 43,395)
COST_TOLERANCE = 1.01
LINE_PAIR = "lora_line"  # --pairs A:lora_line: A against LoRA's straight line between the ranks around A's cost


def reference_order() -> list[str]:
    """The arm the original criteria and the wall-time ratio are measured against, in order of preference: LoRA
    r8 (the issue's reference), else the highest frontier rank present, so that both use the same arm."""
    return [REFERENCE_ARM, *(f"lora_all_r{r}" for r in reversed(FRONTIER_RANKS) if f"lora_all_r{r}" != REFERENCE_ARM)]


def judge_original_criteria(summary: dict[str, Any]) -> None:
    """The original criteria of every arm with runs (or seeds) of its own, against the reference arm (LoRA r8, else
    the highest frontier rank) over all the seeds each has, runs folders and earlier results alike; arms that are
    other arms' runs (``shared``) are not judged twice. Sets the summary's baseline to the reference."""
    from strato_peft.experiments.compare import judge
    from strato_peft.experiments.metric import MetricSpec

    arms_, metric = summary["arms"], MetricSpec(**summary["comparison"]["metric"])
    ref_name = next((n for n in reference_order() if arms_.get(n, {}).get("mean") is not None), None)
    if ref_name is None:
        return  # no frontier arm: compare's own baseline and criteria stand

    def row(a: dict[str, Any]) -> dict[str, Any]:  # compare's row: the metric's own units (fractions, not points)
        return {"mean": None if a["mean"] is None else a["mean"] / metric.scale,
                "std": None if a["std"] is None else a["std"] / metric.scale, "n": a["n"],
                "trainable_params": a["params"], "adapter_flops_per_token": a["adapter_flops"]}
    ref = row(arms_[ref_name])
    for name, a in arms_.items():
        if name not in summary["shared"]:
            own = row(a)
            a["original_criteria"] = judge(own, ref if name != ref_name else own, metric)
    summary["comparison"]["baseline"] = ref_name


def paired_row(arms_: dict[str, dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """Arm ``a`` minus arm ``b`` over the seeds both ran: their means there, the paired gain, std, p and call, how
    many seeds ``a`` is ahead on, and both scores per seed. ``b`` = ``lora_line``: LoRA's curve as a straight line at
    ``a``'s params (``frontier_line``), seed by seed."""
    if b == LINE_PAIR and a in arms_:
        line = frontier_line(arms_, arms_[a]["params"] or 0)
        if line is None:
            return {"error": f"no LoRA line at {a}'s params (at a rank's cost, outside LoRA's range, or below the "
                             "staircase)"}
        arms_ = {**arms_, b: {**line, "mean": line["score"], "params": arms_[a]["params"]}}
    missing = [n for n in (a, b) if n not in arms_]
    if missing:
        return {"error": f"no runs of {', '.join(missing)}"}
    sa, sb = arms_[a]["seed_scores"], arms_[b]["seed_scores"]
    seeds = sorted(set(sa) & set(sb))
    if not seeds:
        return {"error": "no seed in common"}
    return {"a": sum(sa[s] for s in seeds) / len(seeds), "b": sum(sb[s] for s in seeds) / len(seeds),
            "params_a": arms_[a]["params"], "params_b": arms_[b]["params"], **_paired_call(arms_[a], arms_[b]),
            "ahead": sum(sa[s] > sb[s] for s in seeds), "per_seed": {s: {"a": sa[s], "b": sb[s]} for s in seeds}}


def at_least(score: float, other: float) -> bool:
    """score >= other, forgiving float round-off only (the same run's score summed in another order can come out
    1e-14 below itself: a tie is "at or above")."""
    from strato_peft.experiments.verdicts import at_most

    return at_most(other, score)


def best_frontier_at_cost(arms_: dict[str, dict[str, Any]], params: float) -> Optional[str]:
    """The LoRA all-linear rank that scores best among those costing no more than ``params`` (within 1%)."""
    names = [f"lora_all_r{r}" for r in FRONTIER_RANKS if arms_.get(f"lora_all_r{r}", {}).get("mean") is not None
             and (arms_[f"lora_all_r{r}"]["params"] or 0) <= COST_TOLERANCE * params]
    return max(names, key=lambda n: arms_[n]["mean"], default=None)


def higher_bar(arms_: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """At 0.5x budget: STRATO >= the best LoRA-frontier arm that costs no more (within 1%), >= MLP-only and DoRA;
    wall time (search + training) <= 1.2x one LoRA run (r=8; in a folder without r=8 runs, the highest frontier
    rank present: a LoRA run's wall time hardly depends on its rank, 45-54 s for r1-r16 on addition on the H100)."""
    ref_name = next((n for n in reference_order() if arms_.get(n, {}).get("mean") is not None), None)
    ref = arms_.get(ref_name) if ref_name else None
    # LoRA r8's params from the reference rank's (all-linear LoRA params are linear in the rank)
    r8_params = None if ref is None else (ref["params"] or 0) * 8 / int(ref_name.rsplit("_r", 1)[1])
    out = {}
    for name, a in arms_.items():
        if not name.startswith("strato_") or a["mean"] is None or ref is None:
            continue
        frontier_arm = best_frontier_at_cost(arms_, a["params"] or 0)
        best_frontier = None if frontier_arm is None else arms_[frontier_arm]["mean"]
        # MLP-only (r8's params) and DoRA r4 are the issue's cheap alternatives to the 0.5x budget: checked from
        # 0.5x up, not against the curve's cheaper points (r1, r2 params)
        at_half_or_more = COST_TOLERANCE * (a["params"] or 0) >= 0.5 * r8_params
        others = {k: arms_[k]["mean"] for k in ("lora_mlp_eqparams", "dora_all_r4") if k in arms_
                  and arms_[k]["mean"] is not None and at_half_or_more}
        wall_ratio = (a["wall_seconds"] / ref["wall_seconds"]) if a["wall_seconds"] and ref["wall_seconds"] else None
        checks = {
            "beats_frontier_at_cost": None if best_frontier is None else at_least(a["mean"], best_frontier),
            "frontier_best_at_cost": best_frontier,
            "frontier_arm_at_cost": frontier_arm,
            **{f"beats_{k}": at_least(a["mean"], v) for k, v in others.items()},
            "wall_reference": ref_name,
            "wall_time_ratio": wall_ratio,
            "wall_time_ok": None if wall_ratio is None else wall_ratio <= 1.2,
        }
        passed = [v for k, v in checks.items() if k.startswith("beats_") or k == "wall_time_ok"]
        checks["all_passed"] = None if None in passed else all(passed)
        out[name] = checks
    return out


def curve_verdict(arms_: dict[str, dict[str, Any]], verdicts: dict[str, Any]) -> dict[str, Any]:
    """STRATO (knapsack) against LoRA's whole curve: at each budget that has runs, its score minus the best LoRA
    frontier score at no more params; ``beats_whole_curve`` when every such point is >= 0 (None until there is a
    point at each frontier rank's params: 0.125x ... 2x). Each point also pairs the two arms seed by seed (a STRATO
    run and a LoRA run of one seed share the head's init and the data order, and every draw where STRATO trains
    that LoRA's shapes: training/seed.py ``preserved_rng``): the paired t-test's p and a ``call``: win / loss where
    p < SIGNIFICANCE, else tie (the margin is within seed noise). A point between two LoRA ranks is also set against
    the straight line between them (``line``: ``frontier_line``), which a staircase bar lets it beat by spending
    more than the lower rank alone."""
    points, below = {}, {}
    for name, v in verdicts.items():
        match = re.fullmatch(r"strato_knapsack_b([0-9.]+)", name)
        if not match:
            continue
        if v.get("frontier_best_at_cost") is None:  # no LoRA this cheap: against the cheapest, at its higher cost
            cheapest = cheapest_frontier(arms_)
            if cheapest is not None:
                below[float(match.group(1))] = {
                    "arm": name, "params": arms_[name]["params"], "score": arms_[name]["mean"],
                    "frontier_arm": cheapest, "frontier_params": arms_[cheapest]["params"],
                    "frontier_score": arms_[cheapest]["mean"],
                    "margin": arms_[name]["mean"] - arms_[cheapest]["mean"], **_paired_call(arms_[name], arms_[cheapest])}
            continue
        margin = arms_[name]["mean"] - v["frontier_best_at_cost"]
        frontier = v["frontier_arm_at_cost"]
        line = frontier_line(arms_, arms_[name]["params"] or 0)
        if line is not None:
            line.update(margin=arms_[name]["mean"] - line["score"], **_paired_call(arms_[name], line))
        points[float(match.group(1))] = {
            "arm": name, "params": arms_[name]["params"], "score": arms_[name]["mean"],
            "frontier_best_at_cost": v["frontier_best_at_cost"], "frontier_arm": frontier, "margin": margin,
            **_paired_call(arms_[name], arms_[frontier]), "line": line}
    ordered = dict(sorted(points.items()))
    complete = {0.5, *CURVE_BUDGETS} <= set(ordered)  # a point at each frontier rank's params (r1 ... r16)
    calls = [p["call"] for p in ordered.values()]
    return {"points": ordered,
            "beats_whole_curve": all(at_least(p["score"], p["frontier_best_at_cost"]) for p in ordered.values())
            if complete else None,
            "wins": calls.count("win"), "ties": calls.count("tie"), "losses": calls.count("loss"),
            "below_curve": dict(sorted(below.items()))}


def cheapest_frontier(arms_: dict[str, dict[str, Any]]) -> Optional[str]:
    """The LoRA all-linear arm with the fewest params among those with a score (r1 when it ran)."""
    names = [f"lora_all_r{r}" for r in FRONTIER_RANKS if arms_.get(f"lora_all_r{r}", {}).get("mean") is not None]
    return min(names, key=lambda n: arms_[n]["params"] or 0, default=None)


def frontier_line(arms_: dict[str, dict[str, Any]], params: float) -> Optional[dict[str, Any]]:
    """LoRA's curve drawn as a straight line between the two all-linear ranks whose params bracket ``params``: the
    bar between LoRA's grid points (where the staircase, the best LoRA at no more params, gives the lower rank). The
    line's score there and, seed by seed where both ranks ran a seed, its per-seed scores; None at a rank's cost
    (within 1%: the staircase is the same bar there), outside LoRA's range, or where the line runs below the
    staircase (the curve falls: the staircase is the stricter bar)."""
    ranks = sorted((n for n in (f"lora_all_r{r}" for r in FRONTIER_RANKS) if arms_.get(n, {}).get("mean") is not None),
                   key=lambda n: arms_[n]["params"] or 0)
    for low, high in zip(ranks, ranks[1:]):
        p_low, p_high = arms_[low]["params"] or 0, arms_[high]["params"] or 0
        if not (COST_TOLERANCE * p_low < params < p_high / COST_TOLERANCE):
            continue
        weight = (params - p_low) / (p_high - p_low)
        lo, hi = arms_[low], arms_[high]
        score = lo["mean"] + weight * (hi["mean"] - lo["mean"])
        staircase = best_frontier_at_cost(arms_, params)
        if staircase is not None and score < arms_[staircase]["mean"]:
            return None
        seeds = sorted(set(lo.get("seed_scores") or {}) & set(hi.get("seed_scores") or {}))
        seed_scores = {s: lo["seed_scores"][s] + weight * (hi["seed_scores"][s] - lo["seed_scores"][s])
                       for s in seeds}
        return {"low": low, "high": high, "weight": weight, "score": score, "seed_scores": seed_scores}
    return None


def scheduler_worth(arms_: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rank scheduler's worth at each budget run both ways: the STRATO knapsack arm of that budget whose runs
    had the scheduler on (``strato_knapsack_b<B>`` or ``_sched``) minus the one whose runs had it off (``_nosched``
    or the plain name), by each run's recorded setting; paired by seed (the same allocation and draws, so a
    difference is the scheduler's), with the paired p and call per budget; ``pooled`` pairs every (budget, seed)."""
    from strato_peft.experiments.stats import paired_comparison

    by_budget: dict[float, dict[bool, str]] = {}
    for name, a in sorted(arms_.items()):  # the plain name sorts first: a suffixed arm of the same setting wins
        match = re.fullmatch(r"strato_knapsack_b([0-9.]+)(_sched|_nosched)?", name)
        if match and len(a.get("scheduler") or []) == 1 and a.get("seed_scores"):
            by_budget.setdefault(float(match.group(1)), {})[a["scheduler"][0]] = name
    points, on, off = {}, {}, {}
    for budget, names in sorted(by_budget.items()):
        if True not in names or False not in names:
            continue
        a, b = arms_[names[True]], arms_[names[False]]
        seeds = sorted(set(a["seed_scores"]) & set(b["seed_scores"]))
        if not seeds:
            continue
        # the means over the paired seeds only, so that with - without is the paired gain
        points[budget] = {"with_arm": names[True], "without_arm": names[False],
                          "with": sum(a["seed_scores"][s] for s in seeds) / len(seeds),
                          "without": sum(b["seed_scores"][s] for s in seeds) / len(seeds), **_paired_call(a, b)}
        on.update({len(on) + i: a["seed_scores"][s] for i, s in enumerate(seeds)})
        off.update({len(off) + i: b["seed_scores"][s] for i, s in enumerate(seeds)})
    pooled = paired_comparison(on, off, higher_is_better=True) if on else None
    return {"points": points,
            "pooled": None if pooled is None else {"pairs": pooled.n, "mean_gain": pooled.mean_gain,
                                                   "p_value": pooled.p_value, "p_note": pooled.p_note}}


def _paired_call(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Arm a against arm b seed by seed: mean gain, seed std of the gains, paired t p, and the call (win / loss at
    p < SIGNIFICANCE by the gain's sign, else tie); beside them the median gain and the Wilcoxon signed-rank p."""
    from strato_peft.experiments.stats import paired_comparison

    paired = paired_comparison(a.get("seed_scores") or {}, b.get("seed_scores") or {}, higher_is_better=True)
    return {"paired_seeds": paired.n, "paired_gain": paired.mean_gain, "paired_gain_std": paired.gain_std,
            "p_value": paired.p_value, "p_note": paired.p_note, "seeds_to_call": paired.seeds_to_call,
            "call": paired.call or "tie", "median_gain": paired.median_gain, "wilcoxon_p": paired.wilcoxon_p}
