"""The STRATO search end to end: sites -> cost model -> budget -> sensitivity map -> solver (with probes) -> plan."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from strato_peft.cost.model import Cost, LoraCostModel
from strato_peft.strato.allocation import Allocation
from strato_peft.strato.budget import Budget, resolve_budget
from strato_peft.strato.sites import ModuleSite, adaptable_sites

DEFAULT_BUDGET = 0.5


@dataclass
class StratoPlan:
    """The chosen allocation, what it is predicted to cost against the budget, and how it was found."""

    allocation: Allocation
    budget: Budget
    predicted: Cost
    alpha: float                      # rsLoRA alpha used in training (scale alpha/sqrt(r))
    solver: str = "none"
    search: dict[str, Any] = field(default_factory=dict)   # probes, candidates, seconds
    sensitivity: dict[str, Any] = field(default_factory=dict)
    directions: dict[str, Any] = field(default_factory=dict, repr=False)  # the map's vectors, for strato/init.py

    def summary(self) -> dict[str, Any]:
        """The short form for metrics.json (strato_plan.json has everything)."""
        return {"modules": len(self.allocation), "total_rank": int(sum(self.allocation.values())),
                "predicted_cost": self.predicted.as_dict(), "budget_usage": self.budget.usage(self.predicted),
                "budget_limits": self.budget.limits, "budget_fraction": self.budget.fraction,
                "reference": self.budget.reference_desc, "solver": self.solver,
                **{k: self.search[k] for k in ("map_gain", "searched", "skipped", "probes", "reused",
                                               "probe_seconds", "sensitivity_seconds", "total_seconds")
                   if k in self.search}}

    def as_dict(self) -> dict[str, Any]:
        return {"allocation": self.allocation, "modules": len(self.allocation),
                "total_rank": int(sum(self.allocation.values())), "predicted_cost": self.predicted.as_dict(),
                "budget_usage": self.budget.usage(self.predicted), "budget": self.budget.as_dict(),
                "rslora_alpha": self.alpha, "solver": self.solver, "search": self.search,
                "sensitivity": self.sensitivity}


def rslora_alpha(lora_alpha: float, rank: int) -> float:
    """rsLoRA alpha whose scale alpha/sqrt(r) equals LoRA's alpha/r at ``rank``."""
    return lora_alpha / math.sqrt(rank)


def budget_rank(problem: Any) -> int:
    """The rank of the uniform LoRA that fills the budget (LoRA's own point at this cost); 1 below the cost of rank 1
    on every module (LoRA's cheapest point is then the nearest).

    STRATO's rsLoRA scale is matched to LoRA's at this rank: at equal cost, its uniform candidate is exactly that
    LoRA, and the search and scheduler only move rank around it. (Until 2026-11-24 a budget below LoRA r1's cost
    took the reference rank, r8: its rank-1 modules trained at 1/sqrt(8) of LoRA r1's scale.)"""
    from strato_peft.strato.solvers.knapsack import uniform_fill

    alloc = uniform_fill(problem)
    return max(alloc.values()) if alloc else 1


def map_gain(problem: Any) -> Optional[float]:
    """How much more the sensitivity map values its best allocation (greedy on the map) than the uniform LoRA at the
    same budget, as a fraction of the uniform's value (None when no uniform LoRA fits or the map values it at 0)."""
    from strato_peft.strato.solvers.knapsack import greedy, uniform_fill

    uniform = uniform_fill(problem)
    base = problem.surrogate(uniform) if uniform else 0.0
    if base <= 0:
        return None
    return problem.surrogate(greedy(problem, problem.value)) / base - 1.0


def probe_allowance(max_probes: int, probe_steps: int, total_steps: int, max_fraction: float) -> int:
    """How many probes of ``probe_steps`` fit in ``max_fraction`` of a ``total_steps`` run, at most ``max_probes``."""
    return min(max_probes, int(max_fraction * total_steps) // max(1, probe_steps))


def setup(cfg: Any, model: Any) -> tuple[list[ModuleSite], LoraCostModel, Budget]:
    """Candidate sites, their cost model at the run's batch shape, and the resolved budget."""
    s = cfg.peft.strato
    sites = adaptable_sites(model, s.candidates)
    cost_model = LoraCostModel(sites, cfg.training.batch_size, cfg.task.max_length, dropout=cfg.peft.dropout)
    fraction = cfg.peft.budget if cfg.peft.budget is not None else (None if s.budget_absolute else DEFAULT_BUDGET)
    budget = resolve_budget(cost_model, fraction, s.budget_absolute, cfg.peft.lambda_, reference_rank(cfg),
                            reference_targets(cfg))
    return sites, cost_model, budget


def reference_rank(cfg: Any) -> int:
    return cfg.peft.strato.reference_rank or cfg.peft.rank


def reference_targets(cfg: Any) -> Any:
    """The reference LoRA's modules: strato.reference_targets, else peft.target_modules, else all linear layers."""
    targets = cfg.peft.strato.reference_targets or cfg.peft.target_modules
    return None if targets in (None, "all-linear") else targets


def apply_rank_floor(cfg: Any, problem: Any) -> None:
    """``rank_floor``: the ranks the greedy starts from and places the rest of the budget on ('uniform': the budget's
    uniform LoRA; an integer k: rank k on every candidate module, which must fit the budget). The config refuses a
    floor with a solver that does not build on the greedy."""
    from strato_peft.errors import ConfigError
    from strato_peft.strato.solvers.knapsack import uniform_fill

    floor = cfg.peft.strato.rank_floor
    if floor == "uniform":
        problem.floor = uniform_fill(problem)
    elif floor != "none":
        problem.floor = {s.name: s.rank_limit(floor) for s in problem.sites}
        if not problem.fits(problem.floor):
            over = ", ".join(f"{d} {u:.3f}x" for d, u in problem.usage(problem.floor).items() if u > 1.0 + 1e-9)
            raise ConfigError(f"peft.strato.rank_floor: rank {floor} on all {len(problem.sites)} candidate modules "
                              f"uses {over} of the budget; expected at most 1x (lower the floor or raise peft.budget)")


def make_plan(cfg: Any, model: Any, tokenizer: Any, data: Any, platform: Any, total_steps: int,
              fast_dev_run: bool = False) -> StratoPlan:
    """Run the search on the base ``model`` (left unchanged) and return the plan."""
    from strato_peft.models.packaged import cache_dir
    from strato_peft.strato.archive import GoExploreArchive
    from strato_peft.strato.probe import make_probe, sensitivity_batches, validation_split
    from strato_peft.strato.sensitivity import load_or_build, model_fingerprint
    from strato_peft.strato.solvers import AllocationProblem, get_solver

    s = cfg.peft.strato
    sites, cost_model, budget = setup(cfg, model)

    start = time.perf_counter()
    n_batches = 2 if fast_dev_run else s.sensitivity_batches
    batches = sensitivity_batches(cfg, model, tokenizer, data, platform, n_batches)
    key_parts = {"model": model_fingerprint(model, str(cfg.model.path or cfg.model.name)), "task": cfg.task.name,
                 "task_type": data.task_type, "max_length": cfg.task.max_length}
    problem = AllocationProblem(sites=sites, value=lambda site, r: 0.0, site_usage=budget.site_usage,
                                weights=budget.weights, max_rank=s.max_rank, seed=cfg.seed)
    uniform_rank = budget_rank(problem)  # from the costs alone; the map's values come next
    solver_name = cfg.peft.solver or "knapsack"
    apply_rank_floor(cfg, problem)
    build = None
    if s.map_estimator == "update":
        from strato_peft.strato.update_map import build_update_map

        # the map values ranks up to the rank it trained, no further: at least the budget's uniform LoRA's, so that
        # the map can compare the uniform allocation with any other; no module gets more
        map_rank = min(s.max_rank, s.map_rank or max(reference_rank(cfg), uniform_rank))
        problem.max_rank = map_rank
        # the map now depends on a training: everything that shapes it joins the cache key
        key_parts.update(estimator="update", map_rank=map_rank, seed=cfg.seed,
                         peft={"alpha": cfg.peft.alpha, "dropout": cfg.peft.dropout, "init": s.init,
                               "modules_to_save": cfg.peft.modules_to_save, "bias": cfg.peft.bias},
                         training=cfg.training.model_dump(mode="json"))

        def build():
            return build_update_map(cfg, model, tokenizer, data, platform, batches, sites, map_rank, n_batches,
                                    rslora_alpha(cfg.peft.alpha, map_rank))
    smap = load_or_build(cache_dir() / "sensitivity" if s.cache else None, key_parts, model, batches, sites,
                         s.max_rank, build)
    sensitivity_seconds = time.perf_counter() - start

    value = smap.share if s.map_value == "share" else smap.value
    problem.value = lambda site, r: value(site.name, r)
    alpha = rslora_alpha(cfg.peft.alpha, uniform_rank)
    if fast_dev_run:  # exercises the search path whatever the run's length
        probe_steps, max_probes = 2, min(s.max_probes, 2)
    else:
        probe_steps = s.probe_steps or max(10, int(0.05 * total_steps))
        max_probes = probe_allowance(s.max_probes, probe_steps, total_steps, s.max_search_fraction)
    probe_data, _ = validation_split(data, s.validation_examples, cfg.seed)
    probe = make_probe(cfg, model, tokenizer, probe_data, platform, probe_steps, alpha, smap.directions)
    archive = GoExploreArchive(sites, probe)
    problem.archive, problem.max_probes = archive, max_probes
    gain = map_gain(problem)
    if solver_name == "uniform":
        skipped = "solver: uniform"
    elif gain is not None and gain < s.min_map_gain:
        skipped = f"map gain {gain:.4f} < min_map_gain {s.min_map_gain}"
    elif max_probes < min(2, s.max_probes):  # the cap cut the probes to fewer than can compare two allocations
        skipped = (f"{max_probes} probe(s) of {probe_steps} steps fit in max_search_fraction {s.max_search_fraction} "
                   f"of {total_steps} steps")
    else:
        skipped = None
    searched = skipped is None
    if searched:
        options = {"timesteps": s.ppo_timesteps} if solver_name == "ppo" else {}
    else:  # the uniform LoRA, or (low_budget_fill) its sparse alternative where that rank is too low for the start
        sparse = s.low_budget_fill == "top_modules" and s.init == "gradient"
        options = {"min_rank": s.init_min_rank} if sparse else {}
    result = get_solver(solver_name if searched else "uniform")(problem, **options)
    if not result.allocation or not problem.fits(result.allocation):
        raise ValueError(f"strato: solver {solver_name} returned an allocation outside the budget")
    search = {"map_value": s.map_value, "rank_floor": s.rank_floor, "map_gain": gain, "min_map_gain": s.min_map_gain,
              "searched": searched, "skipped": skipped, "max_search_fraction": s.max_search_fraction,
              "total_steps": total_steps, "probe_steps": probe_steps, "max_probes": max_probes, "probes": result.probes,
              "reused": result.reused, "probe_seconds": result.probe_seconds,
              "solver_seconds": result.search_seconds, "sensitivity_seconds": sensitivity_seconds,
              "total_seconds": time.perf_counter() - start, "validation_examples": len(probe_data.eval),
              "candidates": result.candidates, "details": result.details, "archive": archive.summary()}
    return StratoPlan(result.allocation, budget, cost_model.allocation(result.allocation), alpha, solver_name,
                      search, {**smap.info, "per_module_total": {n: smap.total(n) for n in smap.spectra}},
                      smap.directions)


def preview_plan(cfg: Any, model: Any) -> StratoPlan:
    """Dry run (meta device, no data): the budget, and what the greedy solver picks when every parameter is valued
    alike (the real allocation needs the sensitivity map of the weights and data; its costs obey the same budget)."""
    from strato_peft.strato.solvers import AllocationProblem
    from strato_peft.strato.solvers.knapsack import greedy

    sites, cost_model, budget = setup(cfg, model)
    problem = AllocationProblem(sites=sites, value=lambda site, r: float(r * (site.d_in + site.d_out)),
                                site_usage=budget.site_usage, weights=budget.weights, max_rank=cfg.peft.strato.max_rank)
    apply_rank_floor(cfg, problem)
    alloc = greedy(problem, problem.value)
    alpha = rslora_alpha(cfg.peft.alpha, budget_rank(problem))
    return StratoPlan(alloc, budget, cost_model.allocation(alloc), alpha,
                      "preview (flat value; the search needs weights and data)")
