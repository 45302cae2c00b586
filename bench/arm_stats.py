"""One benchmark arm's statistics, computed again from its per-seed scores and costs.

An arm of the benchmark's summary is built from a runs folder by ``strato compare``'s machinery; where its seeds come
from elsewhere too (another arm's run it shares, bench/shared_runs.py; an earlier results file, bench/
earlier_results.py) its mean, std, sampling error and mean costs are computed here over every seed it has now.
"""

from __future__ import annotations

import math
from typing import Any, Optional

COST_KEYS = ("params", "adapter_flops", "peak_memory_bytes", "wall_seconds")


def seed_costs_from_means(arm: dict[str, Any]) -> dict[int, dict[str, Optional[float]]]:
    """Per-seed costs of an arm recorded before results files kept them: each seed gets the arm's mean costs (exact
    where every seed of the arm is taken, the usual case of a file and runs that hold different seeds)."""
    return {seed: {k: arm.get(k) for k in COST_KEYS} for seed in arm["seed_scores"]}


def restate(arm: dict[str, Any], scale: float) -> dict[str, Any]:
    """Set ``arm``'s n, mean, std (ddof=1; 0 for one seed, as compare gives), sampling error (binomial, over its
    held-out examples) and mean costs from its ``seed_scores`` and ``seed_costs``; a cost no seed has stays None.
    Returns the arm."""
    from strato_peft.experiments.stats import summarize

    seeds = sorted(arm["seed_scores"])
    s = summarize([arm["seed_scores"][seed] for seed in seeds])
    arm.update(n=s.n, mean=s.mean, std=s.std)
    costs = arm.get("seed_costs") or {}
    for key in COST_KEYS:
        values = [v for v in ((costs.get(seed) or {}).get(key) for seed in seeds) if v is not None]
        arm[key] = sum(values) / len(values) if values else None
    n_eval = arm.get("held_out_examples")
    p = None if s.mean is None else s.mean / scale
    arm["sampling_error"] = None if p is None or not n_eval else scale * math.sqrt(p * (1 - p) / n_eval)
    return arm
