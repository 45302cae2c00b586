"""A budget in trainable params, training FLOPs per token and memory: absolute, or a fraction of a reference LoRA.

Every cost dimension with a positive lambda weight is a constraint (the allocation's cost in it must not exceed
the budget); the weights also scalarise the cost that solvers trade value against. Without weights the budget is on
parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from strato_peft.cost.model import DIMENSIONS, Cost, LoraCostModel
from strato_peft.errors import ConfigError
from strato_peft.strato.sites import ModuleSite


@dataclass
class Budget:
    """Absolute limits per constrained dimension and the normalised lambda weights."""

    limits: dict[str, float]
    weights: dict[str, float]
    reference: Optional[Cost] = None            # the reference LoRA the fraction was taken of
    reference_desc: str = ""
    fraction: Optional[float] = None
    cost_model: Optional[LoraCostModel] = field(default=None, repr=False)

    def site_usage(self, site: ModuleSite, rank: int) -> dict[str, float]:
        """Fraction of each constrained dimension's budget that ``rank`` on ``site`` uses."""
        cost = self.cost_model.module(site, rank)
        return {d: cost.get(d) / self.limits[d] for d in self.limits}

    def usage(self, cost: Cost) -> dict[str, float]:
        return {d: cost.get(d) / self.limits[d] for d in self.limits}

    def as_dict(self) -> dict[str, Any]:
        return {"limits": self.limits, "weights": self.weights, "fraction": self.fraction,
                "reference": self.reference.as_dict() if self.reference else None,
                "reference_desc": self.reference_desc}


def normalise_weights(lambda_: Optional[Mapping[str, float]]) -> dict[str, float]:
    """Lambda weights over params/flops/memory, positive ones only, summing to 1 (default: params only)."""
    weights = dict(lambda_ or {"params": 1.0})
    unknown = sorted(set(weights) - set(DIMENSIONS))
    if unknown:
        raise ConfigError(f"peft.lambda: unknown cost dimension(s) {unknown}; expected keys among {list(DIMENSIONS)}")
    if any(w < 0 for w in weights.values()):
        raise ConfigError(f"peft.lambda: weights must be >= 0, got {weights}")
    weights = {d: float(w) for d, w in weights.items() if w > 0}
    if not weights:
        raise ConfigError("peft.lambda: at least one weight must be > 0")
    total = sum(weights.values())
    return {d: w / total for d, w in weights.items()}


def resolve_budget(cost_model: LoraCostModel, fraction: Optional[float], absolute: Optional[Mapping[str, float]],
                   lambda_: Optional[Mapping[str, float]], reference_rank: int,
                   reference_targets: Union[None, str, Sequence[str]] = "all-linear") -> Budget:
    """The budget: ``absolute`` limits where given, else ``fraction`` x the reference LoRA's cost
    (rank ``reference_rank`` on ``reference_targets``) in every weighted dimension."""
    weights = normalise_weights(lambda_)
    reference = cost_model.uniform(reference_rank, reference_targets)
    where = reference_targets if isinstance(reference_targets, str) else ",".join(reference_targets or ["all-linear"])
    desc = f"LoRA r={reference_rank} on {where}"
    limits: dict[str, float] = {}
    for d in weights:
        if absolute and d in absolute:
            limits[d] = float(absolute[d])
        elif fraction is not None:
            limits[d] = fraction * reference.get(d)
        else:
            raise ConfigError(f"peft.budget: give a fraction of the reference LoRA, or an absolute limit for {d!r} "
                              f"in peft.strato.budget_absolute")
        if limits[d] <= 0:
            raise ConfigError(f"peft.budget: the {d} budget must be > 0, got {limits[d]}")
    cheapest = min((cost_model.module(s, 1) for s in cost_model.sites), key=lambda c: c.params, default=None)
    if cheapest is None:
        raise ConfigError("peft.strato.candidates: no adaptable module matches")
    for d, lim in limits.items():
        if cheapest.get(d) > lim:
            raise ConfigError(f"peft.budget: the {d} budget ({lim:.4g}) is smaller than rank 1 on the cheapest module "
                              f"({cheapest.get(d):.4g}); raise peft.budget")
    return Budget(limits, weights, reference, desc, fraction, cost_model)
