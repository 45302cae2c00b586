"""Knapsack solver: greedy on marginal value per unit of weighted cost, then probes pick among a few candidates.

Values are concave in rank and costs affine, so adding one rank unit at a time to the site with the best
value-gain / cost-gain ratio (skipping sites whose next unit no longer fits) is the classic greedy for this
multiple-choice knapsack. Because the sensitivity map is an estimate, the solver builds candidates from the map at
full strength and flattened (value^p for each p in ``powers``) plus the uniform allocation that fills the budget,
and - when probes are allowed - lets short probe trainings (through the Go-Explore archive) choose among them.
"""

from __future__ import annotations

import heapq
import time
from typing import Callable, Optional

from strato_peft.strato.allocation import Allocation
from strato_peft.strato.archive import ProbeRecord
from strato_peft.strato.sites import ModuleSite
from strato_peft.strato.solvers.base import AllocationProblem, SolverResult, register_solver

POWERS = (1.0, 0.5)


def greedy(problem: AllocationProblem, value: Callable[[ModuleSite, int], float]) -> Allocation:
    """Add rank units by best marginal value per marginal weighted cost until nothing more fits, starting from
    ``problem.floor`` (``rank_floor: uniform``: the budget's uniform LoRA, so only what it leaves over is placed)."""
    ranks = {s.name: int(problem.floor.get(s.name, 0)) for s in problem.sites}
    floor_usage = problem.usage(ranks)
    used = {d: floor_usage.get(d, 0.0) for d in problem.weights}

    def step(site: ModuleSite, r: int) -> tuple[float, dict[str, float]]:
        now, nxt = problem.site_usage(site, r) if r else {}, problem.site_usage(site, r + 1)
        delta = {d: nxt.get(d, 0.0) - (now.get(d, 0.0) if now else 0.0) for d in problem.weights}
        cost = sum(problem.weights[d] * delta[d] for d in problem.weights)
        gain = value(site, r + 1) - value(site, r)
        return (gain / cost if cost > 0 else float("inf")), delta

    heap = []
    for i, s in enumerate(problem.sites):
        if ranks[s.name] < s.rank_limit(problem.max_rank):
            ratio, delta = step(s, ranks[s.name])
            heapq.heappush(heap, (-ratio, i, delta))
    while heap:
        neg, i, delta = heapq.heappop(heap)
        site = problem.sites[i]
        if -neg <= 0:
            break  # no site gains anything more
        if any(used[d] + delta[d] > 1.0 + 1e-9 for d in delta):
            continue  # this site's next unit does not fit; smaller ones elsewhere may
        for d in delta:
            used[d] += delta[d]
        ranks[site.name] += 1
        if ranks[site.name] < site.rank_limit(problem.max_rank):
            ratio, delta = step(site, ranks[site.name])
            heapq.heappush(heap, (-ratio, i, delta))
    return {n: r for n, r in ranks.items() if r}


def uniform_fill(problem: AllocationProblem) -> Allocation:
    """The largest uniform rank on every site that fits (LoRA's shape at this budget); empty if rank 1 does not."""
    best: Allocation = {}
    for r in range(1, problem.max_rank + 1):
        alloc = {s.name: r for s in problem.sites}
        if not problem.fits(alloc):
            break
        best = alloc
    return best


def top_modules_fill(problem: AllocationProblem, rank: int) -> Allocation:
    """``rank`` on the sites the map values most per unit of weighted cost at that rank, as many as fit (the rest
    get no adapter): the sparse alternative to a uniform rank too low for STRATO's start (see ``solve_uniform``)."""
    def ratio(site: ModuleSite) -> float:
        cost = problem.weighted_cost({site.name: rank})
        return problem.value(site, rank) / cost if cost > 0 else float("inf")

    chosen: Allocation = {}
    for site in sorted(problem.sites, key=ratio, reverse=True):
        if rank <= site.rank_limit() and problem.fits({**chosen, site.name: rank}):
            chosen[site.name] = rank
    return chosen


def candidates(problem: AllocationProblem, powers: tuple[float, ...] = POWERS) -> list[tuple[str, Allocation]]:
    """Distinct candidate allocations in probing order: the map's own pick, then the uniform LoRA (the reference a
    search must beat, so it is probed whenever two probes are), then the flattened maps."""
    picks: list[tuple[str, Allocation]] = []
    for p in powers:
        value = problem.value if p == 1.0 else (lambda s, r, p=p: _powered(problem, s, r, p))
        picks.append((f"greedy value^{p:g}", greedy(problem, value)))
    out = [*picks[:1], ("uniform", uniform_fill(problem)), *picks[1:]]
    seen, distinct = set(), []
    for label, alloc in out:
        key = tuple(sorted(alloc.items()))
        if alloc and key not in seen:
            seen.add(key)
            distinct.append((label, alloc))
    return distinct


def _powered(problem: AllocationProblem, site: ModuleSite, r: int, p: float) -> float:
    """value^p applied per rank unit: sum of the marginal gains each raised to p (stays concave)."""
    return sum(max(problem.value(site, k) - problem.value(site, k - 1), 0.0) ** p for k in range(1, r + 1))


def candidate_row(problem: AllocationProblem, label: str, alloc: Allocation) -> dict:
    """What strato_plan.json records of a considered allocation (its probe score is added when probed)."""
    return {"label": label, "modules": len(alloc), "total_rank": sum(alloc.values()),
            "surrogate": problem.surrogate(alloc), "usage": problem.usage(alloc)}


def solve_knapsack(problem: AllocationProblem) -> SolverResult:
    """Greedy candidates; probes (if any) choose, else the candidate the map values most."""
    start = time.perf_counter()
    arch = problem.archive
    before = (arch.n_probes, arch.reused, arch.probe_seconds) if arch else (0, 0, 0.0)
    cands = candidates(problem)
    if not cands:
        raise ValueError("knapsack: no allocation fits the budget")
    rows = []
    best: Optional[tuple[float, Allocation]] = None
    for n, (label, alloc) in enumerate(cands):
        row = candidate_row(problem, label, alloc)
        if arch is not None and n < problem.max_probes:
            rec: ProbeRecord = arch.evaluate(alloc, solver="knapsack")
            row.update(score=rec.score, probe_seconds=rec.seconds)
            if best is None or rec.score > best[0]:
                best = (rec.score, alloc)
        rows.append(row)
    # no probe ran: the candidate the map values most (the greedy is not optimal when costs per rank differ, so the
    # uniform LoRA can be valued above it)
    chosen = best[1] if best is not None else max(cands, key=lambda c: problem.surrogate(c[1]))[1]
    return SolverResult(
        allocation=chosen, solver="knapsack",
        probes=(arch.n_probes - before[0]) if arch else 0,
        reused=(arch.reused - before[1]) if arch else 0,
        probe_seconds=(arch.probe_seconds - before[2]) if arch else 0.0,
        search_seconds=time.perf_counter() - start, candidates=rows,
        details={"powers": list(POWERS), "chosen": next(r["label"] for r, (_, a) in zip(rows, cands) if a is chosen)})


def solve_uniform(problem: AllocationProblem, min_rank: int = 1) -> SolverResult:
    """No search: the uniform LoRA that fills the budget. An ablation - STRATO's start and scheduler on LoRA's own
    shape - and the baseline the searched allocations are measured against. When that uniform rank is below
    ``min_rank`` (a budget too small for the gradient start, which needs rank >= ``init_min_rank``), ``min_rank`` on
    the modules the map values most per cost instead (``top_modules_fill``)."""
    start = time.perf_counter()
    alloc, label = uniform_fill(problem), "uniform"
    if min_rank > 1 and (not alloc or max(alloc.values()) < min_rank):
        alloc, label = top_modules_fill(problem, min_rank), f"top modules at rank {min_rank}"
    if not alloc:
        raise ValueError("uniform: rank 1 on every candidate module does not fit the budget"
                         + (f", nor rank {min_rank} on any one" if min_rank > 1 else ""))
    return SolverResult(allocation=alloc, solver="uniform", search_seconds=time.perf_counter() - start,
                        candidates=[candidate_row(problem, label, alloc)], details={"chosen": label})


register_solver("knapsack", solve_knapsack)
register_solver("uniform", solve_uniform)
