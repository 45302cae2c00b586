"""Seed statistics of one configuration, and paired differences against the baseline (bootstrap CI, t-test), with
how many seeds a new test would need to call the gain seen."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
ZERO_SPREAD = 1e-12  # paired differences closer than this (relative) count as identical: float round-off only
SIGNIFICANCE = 0.05  # the two-sided paired t level at which a gain is called (a win or a loss), else a tie
POWER = 0.8  # the chance a planned test calls a real gain: four times in five, the usual choice
MOST_SEEDS = 10_000  # a gain needing more seeds than this is reported as out of reach (None)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1; 0 for a single run) and count of a configuration's values."""

    mean: Optional[float]
    std: Optional[float]
    n: int


@dataclass(frozen=True)
class Paired:
    """Per-seed gains (config over baseline, positive = better) and what they say."""

    seeds: list[int]
    n: int
    mean_gain: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    ci_note: Optional[str]
    p_value: Optional[float]
    p_note: Optional[str]  # why p_value is None
    gain_std: Optional[float] = None  # seed std of the per-seed gains (ddof=1)
    call: Optional[str] = None  # "win" / "loss" / "tie" (paired_call()); None without a seed in common
    seeds_to_call: Optional[int] = None  # seeds a new test needs to call mean_gain (seeds_to_call())
    median_gain: Optional[float] = None  # median of the per-seed gains
    wilcoxon_p: Optional[float] = None  # two-sided Wilcoxon signed-rank p (wilcoxon_p()); None where undefined

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample std (ddof=1) of ``values``; std is 0 with one value, both None with none."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return Summary(None, None, 0)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return Summary(float(arr.mean()), std, int(arr.size))


def bootstrap_ci(diffs: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``diffs`` (seeded, so the same data give the same interval)."""
    arr = np.asarray(diffs, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size))].mean(axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_t_p(values: Sequence[float], baseline: Sequence[float]) -> tuple[Optional[float], Optional[str]]:
    """Two-sided paired t-test p-value (scipy.stats.ttest_rel), or None and the reason it is undefined."""
    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    if a.size < 2:
        return None, f"needs >= 2 paired seeds, has {a.size}"
    diffs = a - b
    if np.ptp(diffs) <= ZERO_SPREAD * max(1.0, float(np.abs(diffs).max())):
        return None, "paired differences are all equal (zero variance): t is undefined"
    from scipy.stats import ttest_rel

    p = float(ttest_rel(a, b).pvalue)
    return (p, None) if math.isfinite(p) else (None, "t-test gave no finite p-value")


def wilcoxon_p(values: Sequence[float], baseline: Sequence[float]) -> tuple[Optional[float], Optional[str]]:
    """Two-sided Wilcoxon signed-rank p of the paired differences (scipy.stats.wilcoxon, its defaults: zero
    differences dropped), or None and why. A rank test: one run that never trained moves it by one rank, where it
    can carry a paired t's std tenfold."""
    diffs = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    if np.count_nonzero(diffs) < 2:
        return None, f"needs >= 2 non-zero paired differences, has {np.count_nonzero(diffs)}"
    from scipy.stats import wilcoxon

    p = float(wilcoxon(diffs).pvalue)
    return (p, None) if math.isfinite(p) else (None, "Wilcoxon test gave no finite p-value")


def paired_comparison(values: Mapping[int, float], baseline: Mapping[int, float], higher_is_better: bool,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Paired:
    """Pair runs by seed (seeds both have), then mean and median gain, bootstrap CI of the mean gain, paired t-test p
    and Wilcoxon signed-rank p."""
    seeds = sorted(set(values) & set(baseline))
    a = np.array([values[s] for s in seeds], dtype=float)
    b = np.array([baseline[s] for s in seeds], dtype=float)
    gains = a - b if higher_is_better else b - a
    if not seeds:
        return Paired([], 0, None, None, None, "no seed in common with the baseline", None,
                      "no seed in common with the baseline")
    if len(seeds) < 2:
        low = high = None
        ci_note: Optional[str] = "needs >= 2 paired seeds"
    else:
        (low, high), ci_note = bootstrap_ci(gains, resamples, seed), None
    p, p_note = paired_t_p(a, b)
    gain_std = float(gains.std(ddof=1)) if len(seeds) > 1 else None
    to_call = None if p is None or gain_std is None else seeds_to_call(float(gains.mean()), gain_std)
    return Paired(seeds, len(seeds), float(gains.mean()), low, high, ci_note, p, p_note, gain_std,
                  paired_call(float(gains.mean()), p), to_call, float(np.median(gains)),
                  wilcoxon_p(a, b)[0])  # two-sided: the same p either way round


def paired_call(gain: float, p_value: Optional[float], alpha: float = SIGNIFICANCE) -> str:
    """Whether a method won: "win" (or "loss", by the gain's sign, positive = better) where the paired t-test's p
    is below ``alpha``, else "tie" (the gain is within seed noise; an undefined p, one seed or identical runs, too)."""
    if p_value is None or p_value >= alpha:
        return "tie"
    return "win" if gain > 0 else "loss"


def seeds_to_call(gain: float, gain_std: float, alpha: float = SIGNIFICANCE, power: float = POWER,
                  most: int = MOST_SEEDS) -> Optional[int]:
    """The fewest paired seeds at which a new two-sided paired t-test at ``alpha`` calls a true mean gain of
    ``gain`` with probability ``power``, when per-seed gains scatter with std ``gain_std`` (exact, by the
    noncentral t). For planning a replication of a tie: the observed gain is an optimistic guess of the true one, so
    read it as a lower bound. None for a zero gain, a zero or undefined std, or more than ``most`` seeds."""
    if not (math.isfinite(gain) and math.isfinite(gain_std)) or gain == 0 or gain_std <= 0:
        return None
    from scipy.stats import nct, t

    effect = abs(gain) / gain_std

    def power_at(n: int) -> float:
        df, shift = n - 1, effect * math.sqrt(n)
        crit = t.ppf(1 - alpha / 2, df)
        return float(nct.sf(crit, df, shift) + nct.cdf(-crit, df, shift))

    if power_at(most) < power:
        return None
    low, high = 2, most  # power rises with n: the first n that reaches it, by bisection
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if power_at(mid) < power else (low, mid)
    return low
