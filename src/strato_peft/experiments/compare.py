"""Turn the runs under a results folder into per-configuration statistics, baseline comparisons and verdicts.

The result is one JSON-ready dict (the content of comparison.json); rendering and writing live in report.py.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

from strato_peft.experiments import stats, verdicts
from strato_peft.experiments.collect import COMPLETE, ResultsDirs, RunRecord, collect_runs, results_roots
from strato_peft.experiments.errors import CompareError
from strato_peft.experiments.metric import MetricSpec, metric_spec

DEFAULT_METRICS = ("eval_accuracy", "eval_loss")
DEFAULT_BASELINE_PREFIX = "lora_r8"
Key = tuple[str, str, str]  # (model, task, configuration)


def available_metrics(runs: Sequence[RunRecord]) -> list[str]:
    """Every metric name some complete run reports."""
    return sorted({m for r in runs if r.status == COMPLETE for m in r.metrics})


def choose_metric(runs: Sequence[RunRecord], requested: Optional[str]) -> str:
    """The requested metric (it must exist), else eval_accuracy, else eval_loss."""
    names = available_metrics(runs)
    if requested is not None:
        if requested not in names:
            raise CompareError(f"--metric {requested!r} is not reported by any complete run; available: "
                               f"{', '.join(names) or 'none'}")
        return requested
    for name in DEFAULT_METRICS:
        if name in names:
            return name
    raise CompareError(f"no complete run reports {' or '.join(DEFAULT_METRICS)}; pass --metric, available: "
                       f"{', '.join(names) or 'none'}")


def _ids(keys: Sequence[Key]) -> dict[Key, str]:
    """Configuration ids: the bare name when one model/task is present, else model/task/name."""
    single = len({k[:2] for k in keys}) <= 1
    return {k: k[2] if single else "/".join(k) for k in keys}


def choose_baseline(keys: Sequence[Key], ids: dict[Key, str], complete: set[Key], requested: Optional[str]) -> str:
    """The requested baseline configuration (by name or id), else one named lora_r8*, else the first sorted."""
    if requested is not None:
        if not any(requested in (k[2], ids[k]) for k in keys):
            raise CompareError(f"--baseline {requested!r} is not a configuration here; available: "
                               f"{', '.join(sorted(set(ids.values())))}")
        return requested
    names = sorted({k[2] for k in keys if k in complete}) or sorted({k[2] for k in keys})
    return next((n for n in names if n.startswith(DEFAULT_BASELINE_PREFIX)), names[0])


def _mean(values: list[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _seed_values(runs: list[RunRecord], metric: str) -> tuple[dict[int, float], list[str]]:
    """seed -> value for pairing; seeds seen twice or runs without a seed cannot be paired (noted)."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    notes = []
    for r in runs:
        if r.seed is None:
            notes.append(f"{r.run_name}: no seed known, not paired")
        else:
            by_seed[r.seed].append(r.metrics[metric])
    for seed in sorted(s for s, v in by_seed.items() if len(v) > 1):
        notes.append(f"seed {seed} appears in {len(by_seed[seed])} runs, not paired")
    return {s: v[0] for s, v in by_seed.items() if len(v) == 1}, notes


def _configuration(key: Key, cid: str, runs: list[RunRecord], metric: MetricSpec) -> dict[str, Any]:
    complete = [r for r in runs if r.status == COMPLETE]
    scored = [r for r in complete if metric.name in r.metrics]
    summary = stats.summarize([r.metrics[metric.name] for r in scored])
    seed_values, notes = _seed_values(scored, metric.name)
    kinds = sorted({r.peak_memory_kind for r in complete if r.peak_memory_kind})
    return {
        "id": cid, "model": key[0], "task": key[1], "name": key[2],
        "n": summary.n, "seeds": sorted(r.seed for r in scored if r.seed is not None),
        "runs": [r.run_name for r in scored],
        "runs_without_metric": [r.run_name for r in complete if metric.name not in r.metrics],
        "excluded_runs": [{"run": r.run_name, "status": r.status, "problem": r.problem}
                          for r in runs if r.status != COMPLETE],
        "mean": summary.mean, "std": summary.std,
        "score_mean": None if summary.mean is None else metric.score(summary.mean),
        "score_std": None if summary.std is None else metric.score(summary.std),
        "trainable_params": _mean([r.trainable_params for r in complete]),
        "adapter_flops_per_token": _mean([r.adapter_flops_per_token for r in complete]),
        "peak_memory_bytes": _mean([r.peak_memory_bytes for r in complete]),
        "peak_memory_kind": "/".join(kinds) or None,
        "wall_time_seconds": _mean([r.wall_time_seconds for r in complete]),
        "notes": notes, "_seed_values": seed_values,
    }


def _versus(row: dict, base: dict, metric: MetricSpec, resamples: int, seed: int) -> dict[str, Any]:
    paired = stats.paired_comparison(row["_seed_values"], base["_seed_values"], metric.higher_is_better,
                                     resamples, seed)
    out = paired.as_dict()
    out["baseline"] = base["id"]
    out["gain_definition"] = ("config - baseline" if metric.higher_is_better else "baseline - config") + \
        " (positive = better)"
    for k in ("mean_gain", "median_gain", "ci_low", "ci_high", "gain_std"):
        out[f"score_{k}"] = None if out[k] is None else metric.score(out[k])
    return out


def judge(row: dict, base: Optional[dict], metric: MetricSpec) -> dict[str, Any]:
    """The three original criteria of a configuration row (mean, std, n, trainable_params, adapter_flops_per_token,
    in the metric's own units) against the baseline's row; ``base`` None or the row itself: efficiency and accuracy
    are not judged."""
    stable = verdicts.stability(row["std"], row["n"], metric)
    if base is None or base is row:
        why = "is the baseline" if base is row else "no baseline configuration for this model/task"
        eff = verdicts.Verdict(None, "compared with the baseline", note=why)
        acc = verdicts.Verdict(None, "compared with the baseline", note=why)
    else:
        eff = verdicts.efficiency(row["trainable_params"], base["trainable_params"], row["adapter_flops_per_token"],
                                  base["adapter_flops_per_token"])
        acc = verdicts.accuracy_guardrail(row["mean"], base["mean"], metric)
    return {"efficiency": eff.as_dict(), "accuracy": acc.as_dict(), "stability": stable.as_dict()}


def build_comparison(results_dir: ResultsDirs, baseline: Optional[str] = None, metric: Optional[str] = None,
                     resamples: int = stats.BOOTSTRAP_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED) -> dict[str, Any]:
    """Collect the runs of one results folder or several, pick metric and baseline, and compute every
    configuration's row (comparison.json)."""
    roots = results_roots(results_dir)
    runs = collect_runs(roots)
    if not any(r.status == COMPLETE for r in runs):
        bad = ", ".join(f"{r.run_name} ({r.status})" for r in runs)
        where = ", ".join(map(str, roots))
        raise CompareError(f"results {'directories' if len(roots) > 1 else 'directory'} {where} "
                           f"hold{'' if len(roots) > 1 else 's'} no complete run to compare: {bad}")
    metric_name = choose_metric(runs, metric)
    spec = metric_spec(metric_name, [r.metrics[metric_name] for r in runs
                                     if r.status == COMPLETE and metric_name in r.metrics])
    grouped: dict[Key, list[RunRecord]] = defaultdict(list)
    for r in runs:
        grouped[r.key].append(r)
    keys = sorted(grouped)
    ids = _ids(keys)
    complete_keys = {k for k in keys if any(r.status == COMPLETE for r in grouped[k])}
    baseline_name = choose_baseline(keys, ids, complete_keys, baseline)

    rows = [_configuration(k, ids[k], grouped[k], spec) for k in keys]
    bases = {k[:2]: row for k, row in zip(keys, rows) if baseline_name in (k[2], ids[k])}
    for k, row in zip(keys, rows):
        base = bases.get(k[:2])
        row["is_baseline"] = base is row
        row["vs_baseline"] = None if base is None or base is row else _versus(row, base, spec, resamples, seed)
        row["verdicts"] = judge(row, base, spec)
        passed = [v["passed"] for v in row["verdicts"].values()]
        row["all_passed"] = None if None in passed else all(passed)
    for row in rows:
        del row["_seed_values"]

    counts = {s: sum(r.status == s for r in runs) for s in ("complete", "incomplete", "corrupt")}
    return {
        "results_dir": str(roots[0]) if len(roots) == 1 else [str(r) for r in roots],
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "metric": spec.as_dict(),
        "available_metrics": available_metrics(runs),
        "baseline": baseline_name,
        "thresholds": {"params_ratio_max": verdicts.PARAMS_RATIO_MAX, "flops_ratio_max": verdicts.FLOPS_RATIO_MAX,
                       "accuracy_drop_max": verdicts.ACCURACY_DROP_MAX,
                       "stability_std_max": verdicts.STABILITY_STD_MAX, "unit": spec.unit},
        "bootstrap": {"resamples": resamples, "seed": seed, "confidence": stats.CONFIDENCE, "method": "percentile"},
        "run_counts": counts,
        "configurations": rows,
        # one folder: run paths relative to it; several: as found (each under its own folder)
        "runs": [{**r.as_dict(), "path": _relative(r.path, roots[0]) if len(roots) == 1 else str(r.path)}
                 for r in runs],
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def run_folder(comparison: dict[str, Any], run: dict[str, Any]) -> Path:
    """A run's folder from comparison.json's entry (relative to the results folder when there was one)."""
    path = Path(run["path"])
    results_dir = comparison["results_dir"]
    return path if path.is_absolute() or not isinstance(results_dir, str) else Path(results_dir) / path
