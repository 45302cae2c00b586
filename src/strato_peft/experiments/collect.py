"""Find the runs under results folders and read each into a flat record (complete, incomplete or corrupt).

Reading never fails on one bad run: an unfinished or unreadable run becomes a record whose status says so,
and the statistics leave it out.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from strato_peft.experiments.errors import CompareError

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config_used.yaml"
EVAL_FILE = "eval_results.json"
PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial$")
SEED_SUFFIX = re.compile(r"^(?P<config>.+)_seed(?P<seed>\d+)$")

COMPLETE, INCOMPLETE, CORRUPT = "complete", "incomplete", "corrupt"


@dataclass
class RunRecord:
    """One run folder: where it is, which configuration and seed it belongs to, and what it measured."""

    path: Path
    run_name: str
    configuration: str  # run folder name without its _seed<N> suffix
    model: str
    task: str
    seed: Optional[int]
    status: str  # complete | incomplete | corrupt
    problem: Optional[str] = None  # why a run is incomplete or corrupt
    metrics: dict[str, float] = field(default_factory=dict)  # eval_* keys and <task>/<metric>
    trainable_params: Optional[float] = None
    adapter_flops_per_token: Optional[float] = None
    peak_memory_bytes: Optional[float] = None
    peak_memory_kind: Optional[str] = None  # "device" or "cpu"
    peak_memory_scoped: bool = False  # the run recorded whose peak it is (older runs did not: taken as they are)
    wall_time_seconds: Optional[float] = None
    notes: list[str] = field(default_factory=list)  # non-fatal oddities (unreadable eval_results.json, NaN, ...)

    @property
    def key(self) -> tuple[str, str, str]:
        """(model, task, configuration): runs sharing it are seeds of one configuration."""
        return self.model, self.task, self.configuration

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"path": str(self.path), "run_name": self.run_name, "configuration": self.configuration,
                "model": self.model, "task": self.task, "seed": self.seed, "status": self.status,
                "problem": self.problem, "metrics": dict(sorted(self.metrics.items())),
                "trainable_params": self.trainable_params, "adapter_flops_per_token": self.adapter_flops_per_token,
                "peak_memory_bytes": self.peak_memory_bytes, "peak_memory_kind": self.peak_memory_kind,
                "peak_memory_scoped": self.peak_memory_scoped,
                "wall_time_seconds": self.wall_time_seconds, "notes": list(self.notes)}


def split_run_name(run_name: str) -> tuple[str, Optional[int]]:
    """'lora_r8_seed42' -> ('lora_r8', 42); a name without the suffix is its own configuration."""
    m = SEED_SUFFIX.match(run_name)
    return (m.group("config"), int(m.group("seed"))) if m else (run_name, None)


def _is_run_dir(path: Path) -> bool:
    return PARTIAL.match(path.name) is not None or (path / METRICS_FILE).is_file() or (path / CONFIG_FILE).is_file()


def find_run_dirs(results_dir: Path) -> list[Path]:
    """Run folders under ``results_dir`` (finished, partial staging, config-only); their insides are not searched."""
    found: list[Path] = []
    for root, dirs, _files in os.walk(results_dir):
        here = Path(root)
        if _is_run_dir(here):
            found.append(here)
            dirs[:] = []
            continue
        # .<name>.replaced-<time> folders are an earlier run being swapped out by --overwrite: not a result
        dirs[:] = sorted(d for d in dirs if PARTIAL.match(d) or not d.startswith("."))
    return sorted(found)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _numeric_items(mapping: dict, prefix: str, record: RunRecord) -> dict[str, float]:
    out = {}
    for key, value in mapping.items():
        num = _number(value)
        if num is None:
            continue
        if not math.isfinite(num):
            record.notes.append(f"{prefix}{key} is {num}; left out")
            continue
        out[f"{prefix}{key}"] = num
    return out


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_metrics(record: RunRecord, path: Path) -> None:
    try:
        data = _read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        record.status, record.problem = CORRUPT, f"{METRICS_FILE} unreadable: {exc}"
        return
    final_eval = data.get("final_eval") if isinstance(data, dict) else None
    params = data.get("params") if isinstance(data, dict) else None
    if not isinstance(final_eval, dict) or not isinstance(params, dict) or _number(params.get("trainable")) is None:
        record.status, record.problem = CORRUPT, (f"{METRICS_FILE} lacks the required keys "
                                                  "final_eval (object) and params.trainable (number)")
        return
    run = data.get("run") if isinstance(data.get("run"), dict) else {}
    if record.seed is None and isinstance(run.get("seed"), int):
        record.seed = run["seed"]
    record.metrics.update(_numeric_items(final_eval, "", record))
    record.trainable_params = _number(params.get("trainable"))
    cost = data.get("cost") if isinstance(data.get("cost"), dict) else {}
    record.adapter_flops_per_token = _number(cost.get("adapter_flops_per_token"))
    peak = data.get("peak_memory") if isinstance(data.get("peak_memory"), dict) else {}
    device, cpu = _number(peak.get("device_peak_allocated_bytes")), _number(peak.get("cpu_max_rss_bytes"))
    scoped = record.peak_memory_scoped = "runs_before_in_process" in peak
    if device is not None and (not scoped or peak.get("device_peak_scope") == "this run"):
        record.peak_memory_bytes, record.peak_memory_kind = device, "device"
    elif cpu is not None and (not scoped or peak.get("runs_before_in_process") == 0):
        record.peak_memory_bytes, record.peak_memory_kind = cpu, "cpu"
    elif cpu is not None:
        record.notes.append("peak memory left out: the CPU's peak RSS includes earlier runs of the same process")
    record.wall_time_seconds = _number(data.get("wall_time_seconds"))
    record.notes += [w for w in data.get("warnings") or [] if isinstance(w, str)]  # e.g. stuck at the class prior


def _read_eval_results(record: RunRecord, path: Path) -> None:
    try:
        tasks = _read_json(path).get("tasks", {})
        items = [(name, entry["metrics"]) for name, entry in tasks.items() if isinstance(entry.get("metrics"), dict)]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as exc:
        record.notes.append(f"{EVAL_FILE} unreadable, its scores are left out: {exc}")
        return
    for name, metrics in items:
        record.metrics.update(_numeric_items(metrics, f"{name}/", record))


def read_run(path: Path) -> RunRecord:
    """Read one run folder; model and task come from the results/<model>/<task>/<run> layout."""
    partial = PARTIAL.match(path.name)
    run_name = partial.group("name") if partial else path.name
    configuration, seed = split_run_name(run_name)
    record = RunRecord(path=path, run_name=run_name, configuration=configuration, model=path.parent.parent.name,
                       task=path.parent.name, seed=seed, status=COMPLETE)
    if partial:
        record.status, record.problem = INCOMPLETE, "unfinished run (hidden .partial staging folder)"
    elif not (path / METRICS_FILE).is_file():
        record.status, record.problem = INCOMPLETE, f"{CONFIG_FILE} but no {METRICS_FILE} (run did not finish)"
    else:
        _read_metrics(record, path / METRICS_FILE)
        if record.status == COMPLETE and (path / EVAL_FILE).is_file():
            _read_eval_results(record, path / EVAL_FILE)
    return record


ResultsDirs = str | Path | Sequence[str | Path]  # one results folder, or several


def results_roots(results_dir: ResultsDirs) -> list[Path]:
    """One results folder or several, as a list of paths (several: runs made on different days or machines)."""
    roots = [Path(results_dir)] if isinstance(results_dir, (str, Path)) else [Path(d) for d in results_dir]
    if not roots:
        raise CompareError("no results directory given")
    return roots


def output_dir_for(results_dir: ResultsDirs, output_dir: Optional[str | Path]) -> Path:
    """Where comparison files go: ``output_dir`` if given, else the one results folder (several need one)."""
    if output_dir is not None:
        return Path(output_dir)
    roots = results_roots(results_dir)
    if len(roots) > 1:
        raise CompareError(f"{len(roots)} results directories given: pass --output-dir for the comparison files")
    return roots[0]


def results_label(results_dir: str | list[str]) -> str:
    """comparison.json's results_dir (one folder or a list) as one line of text."""
    return results_dir if isinstance(results_dir, str) else ", ".join(results_dir)


def collect_runs(results_dir: ResultsDirs) -> list[RunRecord]:
    """Every run under one results folder or several; a missing folder, one holding no run, or the same run
    (model/task/run name) found in two folders is a :class:`CompareError`."""
    runs: list[RunRecord] = []
    counted: set[Path] = set()  # resolved run folders already read
    where: dict[tuple[str, str, str], Path] = {}  # model/task/run name -> the folder it was read from
    for root in results_roots(results_dir):
        if not root.is_dir():
            raise CompareError(f"results directory {root} does not exist or is not a directory")
        found = [read_run(p) for p in find_run_dirs(root)]
        if not found:
            raise CompareError(f"results directory {root} holds no runs (no folder with {METRICS_FILE}, "
                               f"{CONFIG_FILE} or .<name>.partial)")
        for run in found:
            if run.path.resolve() in counted:
                continue  # a folder given twice, or one inside another: the same run folder counts once
            other = where.setdefault((run.model, run.task, run.run_name), run.path)
            if other != run.path:
                raise CompareError(f"run {run.model}/{run.task}/{run.run_name} is in two results directories "
                                   f"({other} and {run.path}): compare folders that hold different runs")
            counted.add(run.path.resolve())
            runs.append(run)
    return runs
