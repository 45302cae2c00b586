"""What a solver gets (an allocation problem) and what it returns; solvers register themselves by name.

Costs are additive over modules (params, FLOPs and memory of LoRA on one module do not depend on the others), so a
problem gives each site's budget usage at rank r, per cost dimension, as a fraction of that dimension's budget; an
allocation fits when every dimension's summed fraction is <= 1. ``value`` is the sensitivity map's surrogate gain of
rank r at a site; probes (short trainings, through the Go-Explore archive) give the real score of a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from strato_peft.errors import ConfigError
from strato_peft.registry import Registry
from strato_peft.strato.allocation import Allocation
from strato_peft.strato.archive import GoExploreArchive
from strato_peft.strato.sites import ModuleSite


@dataclass
class AllocationProblem:
    """Sites, the surrogate value of ranks, per-site budget usage, lambda weights, and the probe archive."""

    sites: list[ModuleSite]
    value: Callable[[ModuleSite, int], float]                  # v(site, r): v(site, 0) = 0, non-decreasing in r
    site_usage: Callable[[ModuleSite, int], dict[str, float]]  # budget fraction per dimension at rank r (0 at r=0)
    weights: dict[str, float]                                  # lambda per cost dimension, summing to 1
    max_rank: int = 64
    archive: Optional[GoExploreArchive] = None
    max_probes: int = 0                                        # probes this solver may spend (0: surrogate only)
    seed: int = 0
    floor: dict[str, int] = field(default_factory=dict)        # ranks the greedy starts from and never goes below

    def usage(self, allocation: Mapping[str, int]) -> dict[str, float]:
        """Budget fraction used per dimension by ``allocation``."""
        total = {d: 0.0 for d in self.weights}
        by_name = {s.name: s for s in self.sites}
        for name, r in allocation.items():
            if r:
                for d, u in self.site_usage(by_name[name], int(r)).items():
                    total[d] = total.get(d, 0.0) + u
        return total

    def fits(self, allocation: Mapping[str, int], slack: float = 1e-9) -> bool:
        return all(u <= 1.0 + slack for u in self.usage(allocation).values())

    def weighted_cost(self, allocation: Mapping[str, int]) -> float:
        """Lambda-weighted budget fraction: the scalar cost solvers trade value against."""
        usage = self.usage(allocation)
        return float(sum(w * usage.get(d, 0.0) for d, w in self.weights.items()))

    def surrogate(self, allocation: Mapping[str, int]) -> float:
        """Sum of the sensitivity values of an allocation (what the map predicts it gains)."""
        by_name = {s.name: s for s in self.sites}
        return float(sum(self.value(by_name[n], int(r)) for n, r in allocation.items() if r))


@dataclass
class SolverResult:
    """The chosen allocation and what finding it cost."""

    allocation: Allocation
    solver: str
    probes: int = 0            # probe trainings run
    reused: int = 0            # archive hits (probes saved)
    probe_seconds: float = 0.0
    search_seconds: float = 0.0
    candidates: list[dict[str, Any]] = field(default_factory=list)  # what was considered, with scores
    details: dict[str, Any] = field(default_factory=dict)


Solver = Callable[[AllocationProblem], SolverResult]
_SOLVERS: Registry[Solver] = Registry("solver", "peft.strato.solver", ConfigError)


def register_solver(name: str, solver: Solver) -> Solver:
    """Add a solver under ``name`` (one line per solver module)."""
    return _SOLVERS.register(name, solver)


def get_solver(name: str) -> Solver:
    return _SOLVERS.get(name)


def available_solvers() -> list[str]:
    return _SOLVERS.names()
