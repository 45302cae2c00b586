"""Which way a metric improves and the unit its score is judged in (points for [0, 1] scores, else its own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

LOWER_IS_BETTER_WORDS = ("loss", "perplexity")


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name, direction and score unit: score = value x scale."""

    name: str
    higher_is_better: bool
    scale: float  # 100 for a fraction in [0, 1] (accuracy -> points), 1 otherwise
    unit: str

    def score(self, value: float) -> float:
        """The value in score units (points for fractions)."""
        return value * self.scale

    def gain(self, value: float, baseline: float) -> float:
        """How much better ``value`` is than ``baseline`` in the metric's units (positive = better)."""
        return value - baseline if self.higher_is_better else baseline - value

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "higher_is_better": self.higher_is_better, "scale": self.scale, "unit": self.unit}


def lower_is_better(name: str) -> bool:
    """A metric whose name mentions loss or perplexity improves downwards."""
    return any(word in name.lower() for word in LOWER_IS_BETTER_WORDS)


def metric_spec(name: str, values: Iterable[float]) -> MetricSpec:
    """Direction from the name; points (x100) when higher is better and every observed value lies in [0, 1]."""
    higher = not lower_is_better(name)
    vals = list(values)
    if higher and vals and all(0.0 <= v <= 1.0 for v in vals):
        return MetricSpec(name, higher, 100.0, "points (metric x 100)")
    return MetricSpec(name, higher, 1.0, f"{name} units")
