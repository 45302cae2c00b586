"""PPO policy solver: a small stable-baselines3 policy learns to build an allocation, probes score its best ones.

1. Train PPO (SB3, MlpPolicy, <= 0.5M parameters) in ``AllocationEnv`` (ppo_env.py): group-level rank moves on the
   ladder 0, 1, 2, 4, ..., rewarded by the surrogate value; episodes start empty or from archived allocations.
2. Roll the policy out, invalid actions masked: once deterministically and a few times stochastically from the empty
   allocation, and deterministically from each archive start (every group one level lower, then refilled). The
   archived allocations themselves are candidates too (their cells are reused, never re-probed), so calling again
   with the same archive can only keep or improve the best score. Group-level ranks leave budget unused when no
   group step fits any more; ``top_up`` spends that remainder site by site (greedy on marginal value per weighted
   cost; the candidates record how many site steps it took).
3. Probe the distinct cells best by surrogate through the Go-Explore archive (archived cells are reused, at no probe
   cost), spending at most ``problem.max_probes`` new probes.
4. Go-Explore feedback (when max_probes >= 2): round 1 trains 3/4 of the timesteps and spends half the probes; the
   archive's starts, now including those probes, become the env's start states, the policy trains the last quarter
   and the new rollouts get the rest of the probes. Probe scores reach the policy only through these start states;
   the reward stays the surrogate (a per-group correction fitted on a handful of probes would mostly fit noise).

The result is the best-scoring probed candidate, or the best by surrogate when nothing was probed. Seeded by
``problem.seed`` (SB3 seed, one torch thread); global RNG states and the torch thread count are restored afterwards.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
import time
from typing import Any, Optional

import numpy as np
import torch

from strato_peft.errors import ConfigError
from strato_peft.strato.allocation import Allocation, total_rank
from strato_peft.strato.solvers.base import AllocationProblem, SolverResult, register_solver
from strato_peft.strato.solvers.ppo_env import AllocationEnv, GroupTables
from strato_peft.training.seed import preserved_rng

MAX_POLICY_PARAMS = 500_000
SOLVER = "ppo"
PPO_DEFAULTS: dict[str, Any] = {"batch_size": 64, "n_epochs": 5, "learning_rate": 1e-3, "gamma": 0.99,
                                "gae_lambda": 0.95, "ent_coef": 0.0}


@contextlib.contextmanager
def _isolated():
    """One torch thread (deterministic and fastest for tiny nets); restore global RNGs and threads afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with preserved_rng():
            yield
    finally:
        torch.set_num_threads(threads)


def _rollout(model, env: AllocationEnv, start: np.ndarray, rng: Optional[np.random.Generator]) -> np.ndarray:
    """Final group levels of one episode from ``start``, invalid actions masked (argmax, or sampled with rng)."""
    obs, _ = env.reset(options={"levels": start})
    for _ in range(env.max_steps):
        with torch.no_grad():
            dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0])
            probs = dist.distribution.probs[0].cpu().numpy().astype(float)
        probs = np.where(env.valid_actions(), probs, 0.0)
        if probs.sum() <= 0:
            break
        a = int(np.argmax(probs)) if rng is None else int(rng.choice(len(probs), p=probs / probs.sum()))
        obs, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            break
    return env.levels.copy()


def _top_up(problem: AllocationProblem, tables: GroupTables, alloc: Allocation) -> tuple[Allocation, int]:
    """Spend the budget left over site by site: raise one site one ladder step at a time, best marginal value per
    weighted cost first, while it fits. Returns the new allocation and the number of site steps taken."""
    alloc, dims, ladder = dict(alloc), tables.dims, tables.ladder
    w = np.array([problem.weights.get(d, 0.0) for d in dims])
    used = np.array([problem.usage(alloc).get(d, 0.0) for d in dims])

    def vec(site, r):
        u = problem.site_usage(site, r) if r else {}
        return np.array([u.get(d, 0.0) for d in dims])

    def push(heap, i, r):
        nxt = next((x for x in ladder if x > r), None)
        if nxt is None:
            return
        s = problem.sites[i]
        du = vec(s, nxt) - vec(s, r)
        gain = problem.value(s, nxt) - problem.value(s, r)
        if gain > 0:
            heapq.heappush(heap, (-gain / max(float(w @ du), 1e-12), i, nxt, du))

    heap: list = []
    for i, s in enumerate(problem.sites):
        push(heap, i, alloc.get(s.name, 0))
    steps = 0
    while heap:
        _, i, r, du = heapq.heappop(heap)
        if np.all(used + du <= 1 + 1e-9):   # usage only grows: a step that does not fit now never will
            used += du
            alloc[problem.sites[i].name] = r
            steps += 1
            push(heap, i, r)
    return alloc, steps


def _fallback(problem: AllocationProblem) -> Allocation:
    """The single site with the best value per weighted cost at rank 1, for when no candidate has any module."""
    best, best_ratio = None, -math.inf
    for s in problem.sites:
        alloc = {s.name: 1}
        if problem.fits(alloc):
            ratio = problem.value(s, 1) / max(problem.weighted_cost(alloc), 1e-12)
            if ratio > best_ratio:
                best, best_ratio = alloc, ratio
    if best is None:
        raise ConfigError("strato ppo: the budget is too small for rank 1 on any module")
    return best


class _Search:
    """Candidates found so far (distinct allocations) and the archive evaluations of this solver call."""

    def __init__(self, problem: AllocationProblem, tables: GroupTables, top_up: bool):
        self.problem, self.tables, self.top_up = problem, tables, top_up
        self.candidates: list[dict[str, Any]] = []
        self._seen: set = set()
        self._cells: dict[tuple, float] = {}   # cells evaluated in this call -> score
        self.probes = 0
        self.probe_seconds = 0.0

    def add_levels(self, levels: np.ndarray, source: str) -> None:
        """A policy rollout's group levels as a candidate (topped up when asked)."""
        alloc, steps = self.tables.allocation(levels), 0
        if self.top_up:
            alloc, steps = _top_up(self.problem, self.tables, alloc)
        self.add(alloc, source, steps)

    def add(self, alloc: Allocation, source: str, topped_up_steps: int = 0) -> None:
        key = tuple(sorted(alloc.items()))
        if not alloc or key in self._seen or not self.problem.fits(alloc):
            return
        self._seen.add(key)
        t = self.tables
        groups = {f"{k}/b{b}": t.ladder[lv] for ((k, b), _), lv in zip(t.groups, t.levels_of(alloc))}
        self.candidates.append({"allocation": alloc, "source": source, "groups": groups, "modules": len(alloc),
                                "total_rank": total_rank(alloc), "topped_up_steps": topped_up_steps,
                                "usage": self.problem.usage(alloc), "surrogate": self.problem.surrogate(alloc),
                                "score": None, "probe": None})

    def evaluate(self, max_new: int) -> None:
        """Walk unscored candidates best surrogate first, one archive evaluation per distinct cell: archived cells
        are reused (free), new cells probed while fewer than ``max_new`` probes have been run in this call."""
        archive = self.problem.archive
        if archive is None or self.problem.max_probes <= 0:
            return
        for c in sorted(self.candidates, key=lambda c: -c["surrogate"]):
            if c["score"] is not None:
                continue
            cell = archive.cell(c["allocation"])
            if cell in self._cells:
                c["score"], c["probe"] = self._cells[cell], "same-cell"
                continue
            known = cell in archive.records
            if not known and self.probes >= max_new:
                continue
            rec = archive.evaluate(c["allocation"], SOLVER)
            c["score"], c["probe"] = rec.score, ("reused" if known else "new")
            self._cells[cell] = rec.score
            if not known:
                self.probes += 1
                self.probe_seconds += rec.seconds

    def best(self) -> dict[str, Any]:
        scored = [c for c in self.candidates if c["score"] is not None]
        if scored:
            return max(scored, key=lambda c: (c["score"], c["surrogate"]))
        return max(self.candidates, key=lambda c: c["surrogate"])


def _starts(problem: AllocationProblem, rng: random.Random, k: int) -> list[Allocation]:
    """Up to k distinct archived allocations to explore from (Go-Explore's choice: promising, rarely visited)."""
    if problem.archive is None or not problem.archive.records:
        return []
    out: dict[tuple, Allocation] = {}
    for alloc in problem.archive.starts(k, rng):
        out.setdefault(tuple(sorted(alloc.items())), alloc)
    return list(out.values())


def _start_levels(tables: GroupTables, allocs: list[Allocation]) -> list[np.ndarray]:
    """Archived allocations as distinct, non-empty group levels that fit."""
    out: dict[tuple, np.ndarray] = {}
    for alloc in allocs:
        lv = tables.levels_of(alloc)
        if lv.any():
            out.setdefault(tuple(lv), lv)
    return list(out.values())


def solve_ppo(problem: AllocationProblem, *, timesteps: int = 4096, stochastic_rollouts: int = 4, n_starts: int = 8,
              top_up: bool = True, net_arch: tuple[int, ...] = (64, 64), bands: Optional[int] = None,
              feedback: bool = True, ppo_kwargs: Optional[dict[str, Any]] = None) -> SolverResult:
    """Train a small PPO policy on the surrogate, probe its best rollouts through the archive (see module doc)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    started = time.perf_counter()
    if not problem.sites:
        raise ConfigError("strato ppo: no adaptable sites")
    if bands is None:   # the archive's depth bands, so that group levels line up with its cells
        bands = getattr(problem.archive, "_bands", 3)
    tables = GroupTables(problem, bands)
    rng = random.Random(problem.seed)
    search = _Search(problem, tables, top_up)
    reused_before = problem.archive.reused if problem.archive is not None else 0
    probing = problem.archive is not None and problem.max_probes > 0
    rounds = 2 if feedback and probing and problem.max_probes >= 2 else 1
    steps = [timesteps] if rounds == 1 else [(3 * timesteps) // 4, timesteps - (3 * timesteps) // 4]

    with _isolated():
        archived = _starts(problem, rng, n_starts)
        starts = _start_levels(tables, archived)
        env = AllocationEnv(tables, starts)
        kwargs = {**PPO_DEFAULTS, "n_steps": max(64, min(256, steps[0]) // 64 * 64), **(ppo_kwargs or {})}
        model = PPO("MlpPolicy", env, seed=problem.seed, device="cpu", verbose=0,
                    policy_kwargs={"net_arch": {"pi": list(net_arch), "vf": list(net_arch)}}, **kwargs)
        # no outputs, no folder: without a logger of its own SB3 makes a /tmp/SB3-<date> folder on every learn()
        model.set_logger(Logger(folder=None, output_formats=[]))
        params = int(sum(p.numel() for p in model.policy.parameters()))
        if params > MAX_POLICY_PARAMS:
            raise ConfigError(f"strato ppo: the controller has {params:,} parameters, over {MAX_POLICY_PARAMS:,}")
        roll_env, sample = AllocationEnv(tables), np.random.default_rng(problem.seed)
        empty = np.zeros(len(tables.groups), dtype=int)
        n_archive_starts, train_seconds = len(starts), 0.0
        for rnd in range(rounds):
            t_train = time.perf_counter()
            model.learn(total_timesteps=steps[rnd], reset_num_timesteps=rnd == 0)
            train_seconds += time.perf_counter() - t_train
            search.add_levels(_rollout(model, roll_env, empty, None), f"r{rnd}:deterministic")
            for _ in range(stochastic_rollouts):
                search.add_levels(_rollout(model, roll_env, empty, sample), f"r{rnd}:stochastic")
            for lv in starts:   # return to the archived cell with every group one level lower, refill from there
                search.add_levels(_rollout(model, roll_env, np.maximum(lv - 1, 0), None), f"r{rnd}:from-archive")
            for alloc in archived:   # the archived allocations themselves (reused, never re-probed)
                search.add(alloc, f"r{rnd}:archive")
            search.evaluate(problem.max_probes if rnd == rounds - 1 else (problem.max_probes + 1) // 2)
            if rnd < rounds - 1:   # Go-Explore feedback: explore on from the archive, now with this call's probes
                archived = _starts(problem, rng, n_starts)
                starts = _start_levels(tables, archived)
                env.starts = starts or env.starts
                n_archive_starts += len(starts)

    if not search.candidates:
        search.add(_fallback(problem), "fallback")
        search.evaluate(problem.max_probes)
    best = search.best()
    ranked = sorted(search.candidates, key=lambda c: -c["surrogate"])
    details = {
        "policy_params": params, "net_arch": list(net_arch), "timesteps": int(model.num_timesteps),
        "episodes": env.episodes, "train_seconds": train_seconds, "rounds": rounds, "groups": len(tables.groups),
        "ladder": tables.ladder, "actions": int(env.action_space.n), "obs_dim": int(env.observation_space.shape[0]),
        "archive_starts": n_archive_starts, "reward_scale": tables.norm, "top_up": top_up,
        "chosen": best["source"], "chosen_by": "probe score" if best["score"] is not None else "surrogate",
    }
    return SolverResult(
        allocation=dict(best["allocation"]), solver=SOLVER, probes=search.probes,
        reused=(problem.archive.reused - reused_before) if problem.archive is not None else 0,
        probe_seconds=search.probe_seconds, search_seconds=time.perf_counter() - started,
        candidates=[{k: v for k, v in c.items() if k != "allocation"} for c in ranked], details=details)


register_solver("ppo", solve_ppo)
