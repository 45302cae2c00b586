"""Breadth solver: the map chooses modules, not ranks. Rank is added level by level - rank 1 on the modules the map
values most per unit of cost, as many as fit, and rank 2 anywhere only once every module has rank 1 - so that a low
budget spreads over many modules at rank 1 instead of piling rank 2-3 on a few (the knapsack greedy's pick).

Why: on tweets at 1/16 of LoRA r8's params, LoRA r1 on the top half of the layers (a layer rule, no map) scores as
well as the greedy's concentrated pick; this solver asks whether the map, used only to choose *which* modules, does
better than that rule (on tweets it does not: module by module it undervalues q/k; docs/strato_results.md). Above the budget of uniform rank 1 it is the uniform LoRA plus
the next rank level on the modules valued most.

The layers solver is the same fill over whole transformer blocks (a block's modules share its rank; a module outside
the blocks, such as a pooler, is a block of its own): the map ranks blocks by their modules' summed value, which
does not depend on how it compares one module type with another (its gradient spectra rate query/key projections
near zero, yet adapting them pays).
"""

from __future__ import annotations

import time
from typing import Optional

from strato_peft.strato.allocation import Allocation
from strato_peft.strato.sites import ModuleSite
from strato_peft.strato.solvers.base import AllocationProblem, SolverResult, register_solver
from strato_peft.strato.solvers.knapsack import candidate_row


def level_fill(problem: AllocationProblem, groups: Optional[list[list[ModuleSite]]] = None) -> Allocation:
    """Rank levels 1, 2, ... in turn; within a level, groups (each site alone by default) by marginal map value per
    marginal weighted cost, each group's sites raised to the level together while it fits. A level left incomplete
    (the budget is spent) is the last one; what is left of the budget goes to single sites of the groups that did
    not fit whole, by the same ratio (so a budget between two whole blocks is not left unspent)."""
    groups = groups if groups is not None else [[s] for s in problem.sites]
    alloc: Allocation = {}

    def at(group: list[ModuleSite], level: int) -> Allocation:
        return {s.name: level for s in group} if level else {}

    for level in range(1, problem.max_rank + 1):
        eligible = [g for g in groups if all(alloc.get(s.name, 0) == level - 1 and level <= s.rank_limit()
                                             for s in g)]

        def ratio(group: list[ModuleSite], level: int = level) -> float:
            cost = problem.weighted_cost(at(group, level)) - problem.weighted_cost(at(group, level - 1))
            gain = sum(problem.value(s, level) - problem.value(s, level - 1) for s in group)
            return gain / cost if cost > 0 else float("inf")

        complete = True
        left: list[ModuleSite] = []
        for group in sorted(eligible, key=ratio, reverse=True):
            if problem.fits({**alloc, **at(group, level)}):
                alloc.update(at(group, level))
            else:
                complete = False
                left.extend(group)
        if not complete or not eligible:
            # the budget's remainder, module by module, on the groups that did not fit whole
            for site in sorted(left, key=lambda s: ratio([s]), reverse=True):
                if problem.fits({**alloc, site.name: level}):
                    alloc[site.name] = level
            break
    return alloc


def layer_groups(sites: list[ModuleSite]) -> list[list[ModuleSite]]:
    """The sites of each transformer block together (in block order); a site outside the blocks (a pooler) alone."""
    blocks: dict[int, list[ModuleSite]] = {}
    alone: list[list[ModuleSite]] = []
    for site in sites:
        if site.layer is None:
            alone.append([site])
        else:
            blocks.setdefault(site.layer, []).append(site)
    return [blocks[k] for k in sorted(blocks)] + alone


def _solve(problem: AllocationProblem, name: str, groups: Optional[list[list[ModuleSite]]], label: str) -> SolverResult:
    start = time.perf_counter()
    alloc = level_fill(problem, groups)
    if not alloc:
        raise ValueError(f"{name}: rank 1 on any one candidate module does not fit the budget")
    return SolverResult(allocation=alloc, solver=name, search_seconds=time.perf_counter() - start,
                        candidates=[candidate_row(problem, label, alloc)], details={"chosen": label})


def solve_breadth(problem: AllocationProblem) -> SolverResult:
    """The level fill over modules, no probes (one candidate)."""
    return _solve(problem, "breadth", None, "level fill")


def solve_layers(problem: AllocationProblem) -> SolverResult:
    """The level fill over whole transformer blocks: every linear module of a chosen block at the block's rank."""
    return _solve(problem, "layers", layer_groups(problem.sites), "level fill by block")


register_solver("breadth", solve_breadth)
register_solver("layers", solve_layers)
