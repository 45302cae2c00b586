"""The gymnasium environment the PPO solver trains in: build an allocation group by group on a rank ladder.

Sites are grouped by (kind, depth band), the same rule as the Go-Explore archive's cells, so the action space depends
on the architecture family (kinds x 3 bands: 21 groups for a Llama), not on the model's depth. Every site of a group
has the same rank, a level on the ladder 0, 1, 2, 4, ..., max_rank.

    actions      0..G-1 raise group g one level; G stop
    observation  per group: level, value gain of raising (normalised), weighted budget cost of raising, value per
                 cost of raising (relative to the best group), whether raising fits; then the budget fraction left
                 per cost dimension and the fraction of the episode used  (5G + D + 1 numbers)
    reward       the gain in surrogate value of each raise (normalised so a good allocation is worth about 1): the
                 return of an episode is the surrogate of its final allocation minus that of its start state
                 (dense rewards for the end-state objective; discounting with gamma < 1 barely changes it)
    start        the empty allocation, or (with probability p_start when the archive gave starts) an archived
                 allocation with each group lowered 0-2 levels at random: Go-Explore's "return to a promising
                 cell, then explore from it"

An invalid action (a raise past the budget or the top of the ladder) is not applied: it ends the episode with a small
penalty, so every state is a feasible allocation. Plain SB3 PPO cannot mask actions; the penalty teaches the policy
to avoid them and rollouts after training mask them explicitly. (Lowering actions and invalid-as-no-op were tried:
both learned worse in a few thousand steps, the first by about 5% of the optimum on a synthetic problem.)

Values and usages are tabulated per (group, level) once, so a step costs O(groups x dimensions).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np

from strato_peft.strato.allocation import Allocation
from strato_peft.strato.sites import ModuleSite

INVALID_PENALTY = 0.05


def rank_ladder(max_rank: int) -> list[int]:
    """0, 1, 2, 4, ... up to max_rank (max_rank itself included when it is not a power of two)."""
    ladder, r = [0], 1
    while r <= max_rank:
        ladder.append(r)
        r *= 2
    if ladder[-1] != max_rank and max_rank > 0:
        ladder.append(max_rank)
    return ladder


def site_groups(sites: Sequence[ModuleSite], bands: int = 3) -> list[tuple[tuple[str, int], list[int]]]:
    """((kind, band), site indices) per group, sorted; bands split the blocks into equal depth thirds like the
    archive's cells (sites outside the blocks go to band 0)."""
    layers = [s.layer for s in sites if s.layer is not None]
    n_layers = (max(layers) + 1) if layers else 1
    groups: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(sites):
        band = 0 if s.layer is None else min(bands - 1, s.layer * bands // n_layers)
        groups.setdefault((s.kind, band), []).append(i)
    return sorted(groups.items())


class GroupTables:
    """Per (group, level): summed surrogate value and budget usage per dimension, and the lambda-weighted cost."""

    def __init__(self, problem, bands: int = 3):
        self.sites = list(problem.sites)
        self.ladder = rank_ladder(problem.max_rank)
        self.groups = site_groups(self.sites, bands)
        dims = list(problem.weights)
        for s in self.sites[:1]:
            dims += [d for d in problem.site_usage(s, 1) if d not in dims]
        self.dims = dims
        G, L, D = len(self.groups), len(self.ladder), len(dims)
        self.value = np.zeros((G, L))
        self.usage = np.zeros((G, L, D))
        for g, (_, idx) in enumerate(self.groups):
            for li, r in enumerate(self.ladder[1:], start=1):
                for i in idx:
                    site = self.sites[i]
                    self.value[g, li] += problem.value(site, r)
                    for d, u in problem.site_usage(site, r).items():
                        self.usage[g, li, dims.index(d)] += u
        w = np.array([problem.weights.get(d, 0.0) for d in dims])
        self.wcost = self.usage @ w
        self.norm = self._scale()

    def _scale(self) -> float:
        """Reward scale: the surrogate of the best uniform level that fits (or of the best single group that fits),
        so that a good episode returns about 1."""
        best = 0.0
        for li in range(1, len(self.ladder)):
            if np.all(self.usage[:, li].sum(0) <= 1 + 1e-9):
                best = max(best, float(self.value[:, li].sum()))
        fits = np.all(self.usage <= 1 + 1e-9, axis=2)
        best = max(best, float(np.max(np.where(fits, self.value, 0.0))))
        return best if best > 0 else 1.0

    def levels_of(self, allocation: Mapping[str, int]) -> np.ndarray:
        """Nearest ladder level (in log2(1 + rank)) of each group's mean rank, lowered until the levels fit."""
        lad = np.log2(1 + np.array(self.ladder, dtype=float))
        levels = np.zeros(len(self.groups), dtype=int)
        for g, (_, idx) in enumerate(self.groups):
            mean = sum(int(allocation.get(self.sites[i].name, 0)) for i in idx) / len(idx)
            levels[g] = int(np.argmin(np.abs(lad - np.log2(1 + mean))))
        while levels.any() and not self.fits(levels):
            # drop the group whose top level costs most per unit of value it adds
            g_ix = np.nonzero(levels)[0]
            gain = np.array([self.value[g, levels[g]] - self.value[g, levels[g] - 1] for g in g_ix])
            cost = np.array([self.wcost[g, levels[g]] - self.wcost[g, levels[g] - 1] for g in g_ix])
            levels[g_ix[int(np.argmax(cost / np.maximum(gain, 1e-12)))]] -= 1
        return levels

    def used(self, levels: np.ndarray) -> np.ndarray:
        return self.usage[np.arange(len(levels)), levels].sum(0)

    def fits(self, levels: np.ndarray) -> bool:
        return bool(np.all(self.used(levels) <= 1 + 1e-9))

    def surrogate(self, levels: np.ndarray) -> float:
        return float(self.value[np.arange(len(levels)), levels].sum())

    def allocation(self, levels: np.ndarray) -> Allocation:
        return {self.sites[i].name: self.ladder[lv] for (_, idx), lv in zip(self.groups, levels) if lv
                for i in idx}


class AllocationEnv(gym.Env):
    """Build a group-level allocation one rank level at a time (see the module docstring)."""

    metadata: dict = {"render_modes": []}

    def __init__(self, tables: GroupTables, starts: Optional[list[np.ndarray]] = None, p_start: float = 0.5,
                 max_steps: Optional[int] = None):
        self.t = tables
        self.G, self.L, self.D = len(tables.groups), len(tables.ladder), len(tables.dims)
        self.starts = list(starts or [])
        self.p_start = p_start
        self.max_steps = max_steps or self.G * (self.L - 1) + 1
        self.action_space = gym.spaces.Discrete(self.G + 1)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(5 * self.G + self.D + 1,), dtype=np.float32)
        self.levels = np.zeros(self.G, dtype=int)
        self.steps = 0
        self.episodes = 0

    # -- state ------------------------------------------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        """Start from ``options["levels"]`` if given, else (with probability p_start) from an archive start with
        each group lowered by 0-2 levels at random (Go-Explore: return to the cell, then explore), else empty."""
        super().reset(seed=seed)
        start = (options or {}).get("levels")
        if start is None and self.starts and self.np_random.random() < self.p_start:
            cell = self.starts[int(self.np_random.integers(len(self.starts)))]
            start = np.maximum(cell - self.np_random.integers(0, 3, self.G), 0)
        self.levels = np.zeros(self.G, dtype=int) if start is None else np.array(start, dtype=int)
        self.steps = 0
        self.episodes += 1
        return self._obs(), {}

    def valid_actions(self) -> np.ndarray:
        """Boolean mask over the action space: raises that stay on the ladder and within budget, and stop."""
        G, lv = np.arange(self.G), self.levels
        up = np.minimum(lv + 1, self.L - 1)
        left = 1 + 1e-9 - self.t.used(lv)
        fits = np.all(self.t.usage[G, up] - self.t.usage[G, lv] <= left, axis=1)
        return np.append((lv + 1 < self.L) & fits, True)

    def _obs(self) -> np.ndarray:
        t, lv, G = self.t, self.levels, np.arange(self.G)
        up = np.minimum(lv + 1, self.L - 1)
        gain_up = (t.value[G, up] - t.value[G, lv]) / t.norm
        cost_up = t.wcost[G, up] - t.wcost[G, lv]
        eff = np.where(cost_up > 0, gain_up / np.maximum(cost_up, 1e-12), 0.0)
        eff = eff / eff.max() if eff.max() > 0 else eff
        can = self.valid_actions()[: self.G].astype(float)
        return np.concatenate([lv / (self.L - 1), gain_up, cost_up, eff, can,
                               1.0 - t.used(lv), [self.steps / self.max_steps]]).astype(np.float32)

    # -- dynamics ---------------------------------------------------------------------------------------------------
    def step(self, action: int):
        action = int(action)
        self.steps += 1
        if action == self.G:
            return self._obs(), 0.0, True, False, {}
        if not self.valid_actions()[action]:
            return self._obs(), -INVALID_PENALTY, True, False, {"invalid": True}
        before = self.t.value[action, self.levels[action]]
        self.levels[action] += 1
        reward = (self.t.value[action, self.levels[action]] - before) / self.t.norm
        return self._obs(), float(reward), False, self.steps >= self.max_steps, {}
