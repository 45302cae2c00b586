"""STRATO arms whose run is another arm's run: found by the search alone, recorded, not trained again.

Where STRATO's gate closes (map gain below ``min_map_gain``) and the rank scheduler is off, a STRATO run trains the
budget's uniform LoRA: rank r on every module LoRA all-linear adapts, at LoRA's scale (rsLoRA's a/sqrt(r) with
a = alpha/sqrt(r), i.e. alpha/r), from peft's init, with the same random draws (the search runs in
``preserved_rng``): the run of ``lora_all_r<r>`` at that seed, loss for loss (tests/test_strato.py::
test_strato_training_the_uniform_lora_trains_exactly_the_lora_of_that_seed; on tweets' held-out split the two arms
scored the same to the digit at r2, r4, r8 and r16, seeds 42-44; on addition, bench/strato_lora_identity.py found
STRATO 0.5x's and LoRA r4's first six steps identical bit for bit on SmolLM2-135M). Where a PPO arm's search is
skipped it trains what the knapsack arm of its budget trains. With ``--share-runs`` the benchmark runs ``strato
plan`` (the search alone, the map cached per seed) for a STRATO arm; when every condition of ``differences``
(against a LoRA run) or ``strato_differences`` (against another STRATO arm's run) holds and that run is complete,
it writes a record in ``<runs>/<task>/shared/`` instead of training, and the summary gives the arm that run's
score, its costs, and its wall time plus the search's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

SHARED_DIR, PLANS_DIR = "shared", "plans"


def plan_for(cfg: Any, runs_dir: Path, name: str) -> dict[str, Any]:
    """The search's plan for ``cfg`` (``strato plan`` in its own process), kept in ``runs_dir/plans/<name>.json``."""
    import yaml

    path = runs_dir / PLANS_DIR / f"{name}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        config = path.with_suffix(".yaml")
        config.write_text(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
        subprocess.run([sys.executable, "-m", "strato_peft.cli", "plan", "--config", str(config), "--output",
                        str(path)], check=True)
    return json.loads(path.read_text())


def lora_a_module(key: str) -> Optional[str]:
    """The module a saved peft adapter tensor belongs to if it is a lora_A weight
    ("base_model.model.<module>.lora_A.weight" -> "<module>"), else None."""
    if ".lora_A." not in key:
        return None
    return key.split("base_model.model.", 1)[1].split(".lora_A.", 1)[0]


def adapter_updates(run_dir: Path) -> dict[str, Any]:
    """Module name -> scale * B @ A of a run's saved LoRA adapter (per-module scale from alpha_pattern / rank_pattern;
    alpha / sqrt(r) where the adapter uses rsLoRA)."""
    from safetensors.torch import load_file

    conf = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    ranks, alphas = conf.get("rank_pattern") or {}, conf.get("alpha_pattern") or {}
    out = {}
    for key, a in weights.items():
        name = lora_a_module(key)
        if name is not None:
            r, alpha = ranks.get(name, conf["r"]), alphas.get(name, conf["lora_alpha"])
            scale = alpha / (r ** 0.5 if conf.get("use_rslora") else r)
            out[name] = scale * weights[key.replace(".lora_A.", ".lora_B.")].float() @ a.float()
    return out


def adapted_modules(run: Path) -> set[str]:
    """The module names a finished LoRA run adapted (its adapter file's lora_A keys; the header alone is read)."""
    from safetensors import safe_open

    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as f:
        return {m for m in map(lora_a_module, f.keys()) if m is not None}


def uniform_rank(plan: dict[str, Any]) -> Optional[int]:
    """The plan's one rank if every module has it, else None."""
    ranks = set(plan["allocation"].values())
    return ranks.pop() if len(ranks) == 1 else None


def differences(strato_cfg: Any, plan: dict[str, Any], lora_cfg: Any, lora_run: Path) -> list[str]:
    """Why the STRATO run of ``strato_cfg`` (whose search gave ``plan``) would not train exactly ``lora_run`` (a
    complete run of ``lora_cfg``): one line per unmet condition; empty when the two runs are the same."""
    why = []
    s = strato_cfg.peft.strato
    if plan["search"]["searched"]:
        why.append("the search ran (the allocation is the solver's, not the uniform LoRA)")
    r = uniform_rank(plan)
    if r is None or r != lora_cfg.peft.rank:
        why.append(f"the plan's ranks {sorted(set(plan['allocation'].values()))} are not {lora_cfg.peft.rank} "
                   "on every module")
    if s.scheduler:
        why.append("the rank scheduler is on")
    if s.init != "kaiming":
        why.append(f"peft.strato.init is {s.init}, not peft's start")
    if r is not None and not math.isclose(plan["rslora_alpha"] / math.sqrt(r), lora_cfg.peft.alpha / r,
                                          rel_tol=1e-12):
        why.append(f"scale {plan['rslora_alpha'] / math.sqrt(r):.6g} is not LoRA's {lora_cfg.peft.alpha / r:.6g}")
    modules = adapted_modules(lora_run)
    if set(plan["allocation"]) != modules:
        why.append(f"modules differ: {len(set(plan['allocation']) ^ modules)} in one set only")
    return why + setting_differences(strato_cfg, lora_cfg, lambda k: not k.startswith("peft.") or k in (
        "peft.dropout", "peft.bias", "peft.modules_to_save", "peft.alpha"))


def strato_differences(strato_cfg: Any, plan: dict[str, Any], other_cfg: Any, other_plan: dict[str, Any]
                       ) -> list[str]:
    """Why the STRATO run of ``strato_cfg`` (plan ``plan``) would not train exactly another STRATO arm's complete
    run (``other_cfg``, its recorded plan ``other_plan``), e.g. PPO where the gate skipped its search against the
    knapsack arm of the same budget: neither searched, the same allocation and scale, every setting but the solver
    equal."""
    why = [f"the search ran in {who}" for who, p in (("this arm", plan), ("the other", other_plan))
           if p["search"]["searched"]]
    if plan["allocation"] != other_plan["allocation"]:
        why.append("the allocations differ")
    if not math.isclose(plan["rslora_alpha"], other_plan["rslora_alpha"], rel_tol=1e-12):
        why.append(f"rsLoRA alpha {plan['rslora_alpha']:.6g} vs {other_plan['rslora_alpha']:.6g}")
    return why + setting_differences(strato_cfg, other_cfg, lambda k: k != "peft.solver")


def setting_differences(a_cfg: Any, b_cfg: Any, compared: Callable[[str], bool]) -> list[str]:
    """The config keys (dotted; logging aside: where a run writes is not what it trains) where two runs differ."""
    from common import flat_keys

    a, b = flat_keys(a_cfg.to_yaml_dict()), flat_keys(b_cfg.to_yaml_dict())
    keys = {k for k in set(a) | set(b) if not k.startswith("logging.") and compared(k)}
    return [f"{k}: {a.get(k)!r} here, {b.get(k)!r} in the other run" for k in sorted(keys) if a.get(k) != b.get(k)]


def record(runs_dir: Path, name: str, entry: dict[str, Any]) -> Path:
    """Write the record that run ``name`` is ``entry['same_as']`` (atomically)."""
    from strato_peft.outputs import atomic_write_json

    path = runs_dir / SHARED_DIR / f"{name}.json"
    atomic_write_json(path, entry)
    return path


def records(runs_dirs: list[Path]) -> list[dict[str, Any]]:
    """Every sharing record under the runs folders."""
    out = []
    for d in runs_dirs:
        out += [json.loads(p.read_text()) for p in sorted((d / SHARED_DIR).glob("*.json"))]
    return out


def merge(arms_: dict[str, dict[str, Any]], entries: list[dict[str, Any]], scale: float,
          only: Optional[list[str]] = None) -> dict[str, dict[int, str]]:
    """Give each recorded arm that has no runs of its own the scores of the runs it shares at the recorded seeds:
    costs from that arm's run of the seed, wall time its plus the search's; an arm with runs of its own is left as it
    is. Returns arm -> seed -> the arm whose run it is, for what was merged."""
    from arm_stats import restate, seed_costs_from_means

    merged: dict[str, dict[int, str]] = {}
    for e in entries:
        arm, seed, same = e["arm"], int(e["seed"]), e["same_arm"]
        if (only and arm not in only) or same not in arms_ or seed not in arms_[same]["seed_scores"]:
            continue
        if arm in arms_ and (seed in arms_[arm]["seed_scores"] or arm not in merged):
            continue  # an arm with runs of its own keeps them (a seed it ran is never replaced)
        base = arms_[same]
        if arm not in arms_:
            arms_[arm] = {**base, "seed_scores": {}, "seed_costs": {}, "original_criteria": None}
        costs = (base.get("seed_costs") or seed_costs_from_means(base))[seed]
        arms_[arm]["seed_scores"][seed] = base["seed_scores"][seed]
        arms_[arm]["seed_costs"][seed] = {**costs, "wall_seconds": (costs["wall_seconds"] or 0.0) + e["search_seconds"]}
        merged.setdefault(arm, {})[seed] = same
    for arm in merged:
        restate(arms_[arm], scale)
    return merged
