"""The PPO allocation solver on synthetic problems: feasibility, beats uniform LoRA, small controller, archive use
(probe budget, reuse across calls), determinism."""

from __future__ import annotations

import math
import tempfile

import pytest

from strato_peft.errors import ConfigError
from strato_peft.strato.archive import GoExploreArchive, ProbeOutcome
from strato_peft.strato.sites import ModuleSite
from strato_peft.strato.solvers.base import AllocationProblem, get_solver
from strato_peft.strato.solvers.ppo import MAX_POLICY_PARAMS, solve_ppo
from strato_peft.strato.solvers.ppo_env import AllocationEnv, GroupTables, rank_ladder

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj")
SENS = {"q_proj": 0.2, "k_proj": 0.2, "v_proj": 4.0, "o_proj": 1.0}   # v_proj, then o_proj, clearly worth most
TS = 1024   # timesteps: enough on this problem, about a second


def problem(layers: int = 4, budget_rank: float = 4, max_rank: int = 16, seed: int = 0, **kw) -> AllocationProblem:
    """layers x 4 kinds; concave value growing with depth; params budget = uniform rank ``budget_rank``."""
    sites = [ModuleSite(f"model.layers.{i}.self_attn.{k}", k, i, 64, 32 if k == "k_proj" else 64)
             for i in range(layers) for k in KINDS]
    budget = budget_rank * sum(s.d_in + s.d_out for s in sites)

    def value(site: ModuleSite, r: int) -> float:
        return SENS[site.kind] * (1 + site.layer) / layers * math.log1p(r)

    def usage(site: ModuleSite, r: int) -> dict[str, float]:
        return {"params": r * (site.d_in + site.d_out) / budget}

    return AllocationProblem(sites, value, usage, {"params": 1.0}, max_rank=max_rank, seed=seed, **kw)


def best_uniform(p: AllocationProblem) -> tuple[float, int]:
    fits = [r for r in range(1, p.max_rank + 1) if p.fits({s.name: r for s in p.sites})]
    return max((p.surrogate({s.name: r for s in p.sites}), r) for r in fits)


def with_archive(p: AllocationProblem, max_probes: int) -> list:
    calls: list = []

    def probe(alloc):
        calls.append(dict(alloc))
        return ProbeOutcome(score=p.surrogate(alloc) / 10, seconds=0.01)   # a "real" score close to the surrogate

    p.archive, p.max_probes = GoExploreArchive(p.sites, probe), max_probes
    return calls


def v_rank(p: AllocationProblem, alloc) -> int:
    return sum(r for n, r in alloc.items() if n.endswith("v_proj"))


def test_ladder_and_groups():
    assert rank_ladder(16) == [0, 1, 2, 4, 8, 16]
    assert rank_ladder(12) == [0, 1, 2, 4, 8, 12]
    t = GroupTables(problem())
    assert len(t.groups) == 4 * 3   # kind x depth band, independent of the number of layers
    assert len(GroupTables(problem(layers=12)).groups) == 12
    env = AllocationEnv(t)
    assert env.action_space.n == 13 and env.valid_actions().all()


@pytest.mark.parametrize("top_up", [False, True])
def test_fits_fills_budget_and_beats_uniform(top_up):
    p = problem()
    res = solve_ppo(p, timesteps=TS, top_up=top_up)
    assert res.solver == "ppo" and res.allocation and p.fits(res.allocation)
    assert p.usage(res.allocation)["params"] >= 0.7
    unif_value, unif_rank = best_uniform(p)
    assert p.surrogate(res.allocation) >= unif_value
    assert v_rank(p, res.allocation) > v_rank(p, {s.name: unif_rank for s in p.sites})
    assert res.details["policy_params"] <= MAX_POLICY_PARAMS
    assert res.details["timesteps"] >= TS and res.details["episodes"] > 0
    assert res.probes == 0 and res.search_seconds > 0 and res.candidates
    assert res.details["chosen_by"] == "surrogate"


def test_leaves_no_sb3_log_folder(tmp_path, monkeypatch):
    # SB3's default logger makes a folder under the temp dir on every learn(); the solver logs nowhere
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    assert tempfile.gettempdir() == str(tmp_path)
    solve_ppo(problem(), timesteps=128)
    assert list(tmp_path.iterdir()) == []


def test_registered():
    assert get_solver("ppo") is solve_ppo


def test_deterministic_for_a_seed():
    a = solve_ppo(problem(seed=3), timesteps=TS)
    b = solve_ppo(problem(seed=3), timesteps=TS)
    assert a.allocation == b.allocation
    assert [c["surrogate"] for c in a.candidates] == [c["surrogate"] for c in b.candidates]


def test_archive_probe_budget_and_reuse():
    p = problem()
    calls = with_archive(p, max_probes=3)
    first = solve_ppo(p, timesteps=TS)
    assert 1 <= first.probes <= 3 and len(calls) == first.probes == p.archive.n_probes
    assert first.details["rounds"] == 2 and first.details["chosen_by"] == "probe score"
    best_first = max(c["score"] for c in first.candidates if c["score"] is not None)
    assert p.archive.cell(first.allocation) in p.archive.records and p.fits(first.allocation)

    reused_before = p.archive.reused
    second = solve_ppo(p, timesteps=TS)
    assert second.reused > 0 and p.archive.reused == reused_before + second.reused
    assert second.probes <= 3
    assert len(calls) == p.archive.n_probes   # no cell was ever probed twice
    assert second.details["archive_starts"] > 0   # explored from archived cells
    assert max(c["score"] for c in second.candidates if c["score"] is not None) >= best_first


def test_no_probes_when_max_probes_is_zero():
    p = problem()
    calls = with_archive(p, max_probes=0)
    res = solve_ppo(p, timesteps=TS)
    assert calls == [] and res.probes == 0 and p.fits(res.allocation)


def test_tight_budget_still_returns_a_module():
    # 6 layers: every (kind, band) group has 2 sites, and the budget fits rank 1 on one k_proj only, so the
    # group-level policy can place nothing; the top-up (or, without it, the fallback) must
    p = problem(layers=6, budget_rank=0.04)
    res = solve_ppo(p, timesteps=256)
    assert res.allocation and p.fits(res.allocation)
    res = solve_ppo(p, timesteps=256, top_up=False)
    assert res.allocation and p.fits(res.allocation)
    with pytest.raises(ConfigError, match="too small"):
        solve_ppo(problem(layers=6, budget_rank=0.001), timesteps=256, top_up=False)
