"""The original framework's three success criteria, judged per configuration against the baseline.

Each verdict carries the figures behind it. Comparisons are inclusive exactly as written (<=, >=), with a
1e-9 relative tolerance so that float round-off (79.5 stored as 79.50000000000001) cannot flip a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from strato_peft.experiments.metric import MetricSpec

PARAMS_RATIO_MAX = 0.7  # efficiency: trainable params <= 0.7 x baseline's ...
FLOPS_RATIO_MAX = 0.8  # ... or adapter FLOPs per token <= 0.8 x baseline's
ACCURACY_DROP_MAX = 0.5  # guardrail: mean score >= baseline mean - 0.5 (score units; points for fractions)
STABILITY_STD_MAX = 0.4  # stability: std over seeds <= 0.4 (score units)
TOLERANCE = 1e-9


@dataclass
class Verdict:
    """One criterion: passed (True/False, None when it cannot be judged), the rule, and the numbers used."""

    passed: Optional[bool]
    rule: str
    figures: dict[str, Any] = field(default_factory=dict)
    note: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"passed": self.passed, "rule": self.rule, "figures": self.figures, "note": self.note}


def at_most(value: float, limit: float) -> bool:
    """value <= limit, inclusive, forgiving float round-off only."""
    return value <= limit + TOLERANCE * max(1.0, abs(limit))


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    return value / base if value is not None and base not in (None, 0) else None


def efficiency(params: Optional[float], base_params: Optional[float], flops: Optional[float],
               base_flops: Optional[float]) -> Verdict:
    """Trainable params <= 0.7 x baseline's OR adapter FLOPs per token <= 0.8 x baseline's."""
    rule = f"trainable params <= {PARAMS_RATIO_MAX} x baseline OR adapter FLOPs/token <= {FLOPS_RATIO_MAX} x baseline"
    checks = []
    if params is not None and base_params:
        checks.append(at_most(params, PARAMS_RATIO_MAX * base_params))
    if flops is not None and base_flops:
        checks.append(at_most(flops, FLOPS_RATIO_MAX * base_flops))
    figures = {"trainable_params": params, "baseline_trainable_params": base_params,
               "params_ratio": _ratio(params, base_params), "adapter_flops_per_token": flops,
               "baseline_adapter_flops_per_token": base_flops, "flops_ratio": _ratio(flops, base_flops)}
    if not checks:
        return Verdict(None, rule, figures, "no parameter or FLOP figures to compare")
    return Verdict(any(checks), rule, figures)


def accuracy_guardrail(mean: Optional[float], base_mean: Optional[float], metric: MetricSpec) -> Verdict:
    """Mean score no worse than the baseline's mean by more than 0.5 score units (direction-aware)."""
    worse = "-" if metric.higher_is_better else "+"
    cmp = ">=" if metric.higher_is_better else "<="
    rule = f"mean score {cmp} baseline mean {worse} {ACCURACY_DROP_MAX} ({metric.unit})"
    if mean is None or base_mean is None:
        return Verdict(None, rule, {"mean": mean, "baseline_mean": base_mean}, "no score for one side")
    score, base = metric.score(mean), metric.score(base_mean)
    gain = metric.gain(score, base)
    figures = {"mean": score, "baseline_mean": base, "gain": gain, "limit": -ACCURACY_DROP_MAX, "unit": metric.unit}
    return Verdict(at_most(-gain, ACCURACY_DROP_MAX), rule, figures)


def stability(std: Optional[float], n: int, metric: MetricSpec) -> Verdict:
    """Standard deviation over seeds <= 0.4 score units (needs at least two seeds)."""
    rule = f"std over seeds <= {STABILITY_STD_MAX} ({metric.unit})"
    score_std = metric.score(std) if std is not None else None
    figures = {"std": score_std, "n": n, "limit": STABILITY_STD_MAX, "unit": metric.unit}
    if n < 2 or score_std is None:
        return Verdict(None, rule, figures, f"needs >= 2 seeds, has {n}")
    return Verdict(at_most(score_std, STABILITY_STD_MAX), rule, figures)
