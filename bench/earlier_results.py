"""Arms of a committed results file joined seed by seed with the runs at hand.

Run folders hold adapters and are not committed, so they are lost with a machine; a results file of this benchmark
keeps each arm's per-seed scores (and, since 2026-12-02, its per-seed costs). ``--earlier-results`` takes from it
every seed the runs folders lack: a whole arm no run folder has, or the missing seeds of one they have (seed 42 of an
arm from the file, seeds 43-44 from new runs); a seed a run folder holds is never replaced. CPU runs are
deterministic per seed across machines (docs/strato_results.md), which is what makes pairing such seeds sound. An
arm whose held-out size, learning rates or scheduler setting differ between the two is refused: that is another split
or another arm definition, not more seeds of the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import results_file
from arm_stats import restate, seed_costs_from_means

SAME_ARM_KEYS = ("held_out_examples", "learning_rates", "scheduler")  # equal wherever both sides record them


def load(path: Path, task: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[int, str]]]:
    """The arms a results file of this benchmark holds for ``task`` and its sharing record (arm -> seed -> the arm
    whose run it is); none if it has no such task. Seed keys back to ints after JSON; a seed without recorded costs
    (a file that predates them) gets the arm's means."""
    found = _task(path, task) or {}
    arms = {}
    for name, arm in (found.get("arms") or {}).items():
        arm = {**arm, "seed_scores": arm.get("seed_scores") or {}}
        arm["seed_costs"] = {**seed_costs_from_means(arm), **(arm.get("seed_costs") or {})}
        arms[name] = arm
    shared = found.get("shared") or {}
    return arms, shared


def recorded_comparison(path: Path, task: str) -> Optional[dict[str, Any]]:
    """The metric, thresholds and baseline the file's summary of ``task`` was computed with (a summary made from
    results files alone, no run at hand, is stated in them); None if the file has no such task."""
    found = _task(path, task)
    return None if found is None else found.get("comparison")


def _task(path: Path, task: str) -> Optional[dict[str, Any]]:
    return results_file.read(path, "--earlier-results")[1].get(task)


def join(arms: dict[str, dict[str, Any]], shared: dict[str, dict[int, str]], path: Path, task: str, scale: float,
         only: Optional[list[str]] = None) -> dict[str, list[int]]:
    """Add to ``arms`` (and ``shared``) the seeds the results file ``path`` has and they lack, and compute each
    changed arm's statistics again; returns arm -> the seeds taken from the file."""
    earlier, earlier_shared = load(path, task)
    taken: dict[str, list[int]] = {}
    for name, old in earlier.items():
        if only and name not in only:
            continue
        now = arms.get(name)
        seeds = sorted(set(old["seed_scores"]) - set(now["seed_scores"] if now else ()))
        if not seeds:
            continue
        if now is None:
            arms[name] = now = {**old, "seed_scores": {}, "seed_costs": {}}
        else:
            _check_same_arm(name, now, old, path)
            for key in SAME_ARM_KEYS:  # equal where both have it: the side that has it
                now[key] = now.get(key) or old.get(key)
        for seed in seeds:
            now["seed_scores"][seed] = old["seed_scores"][seed]
            now["seed_costs"][seed] = old["seed_costs"][seed]
            if seed in earlier_shared.get(name, {}):
                shared.setdefault(name, {})[seed] = earlier_shared[name][seed]
        restate(now, scale)
        taken[name] = seeds
    return taken


def _check_same_arm(name: str, now: dict[str, Any], old: dict[str, Any], path: Path) -> None:
    """Refuse to join seeds of what is not the same arm: another held-out split, learning rate or scheduler setting."""
    for key in SAME_ARM_KEYS:
        a, b = now.get(key), old.get(key)
        if a and b and a != b:
            raise SystemExit(f"--earlier-results {path}: arm {name} has {key} {b!r} there and {a!r} in the runs; "
                             "seeds of different settings are not joined (give that arm another name or leave the "
                             "file out)")
