"""Run evaluation tasks on one target and write ``eval_results.json`` (and per-sample records) atomically.

Results accumulate: tasks evaluated earlier stay in the file; re-scoring a task already there needs
``overwrite=True`` so that an earlier result is never replaced silently.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

from strato_peft.eval.base import EvalOptions, TaskResult, get_task
from strato_peft.eval.target import EvalInputError, EvalTarget, load_eval_target
from strato_peft.outputs import atomic_write_json, atomic_write_text, slug
from strato_peft.provenance import git_commit, library_versions

RESULTS_FILE = "eval_results.json"


def check_options(tasks: Sequence[str], options: EvalOptions) -> None:
    """Reject bad task names and option values before any model is loaded."""
    if not tasks:
        raise EvalInputError("--tasks: name at least one task")
    if options.limit is not None and options.limit <= 0:
        raise EvalInputError(f"--limit: must be a positive number of examples, got {options.limit}")
    if options.batch_size <= 0:
        raise EvalInputError(f"--batch-size: must be positive, got {options.batch_size}")
    if options.num_samples <= 0:
        raise EvalInputError(f"--num-samples: must be positive, got {options.num_samples}")
    for name in tasks:
        task = get_task(name)
        if options.shots is not None:
            if options.shots < 0:
                raise EvalInputError(f"--shots: must be >= 0, got {options.shots}")
            available = task.max_shots() if task.max_shots else 0
            if options.shots > available:
                raise EvalInputError(f"--shots {options.shots}: task {name} has only {available} examples to draw "
                                     "few-shot examples from")


def default_output_dir(target: EvalTarget, checkpoint: Optional[str], model: Optional[str]) -> Path:
    """The run folder of a checkpoint, the adapter folder, or results/<model>/base_eval for a base model."""
    if target.run_dir is not None:
        return target.run_dir
    if checkpoint:
        return Path(checkpoint)
    return Path("results") / slug(Path(model).name if model and Path(model).is_dir() else str(model)) / "base_eval"


def evaluate(tasks: Sequence[str], options: EvalOptions, checkpoint: Optional[str] = None,
             model: Optional[str] = None, output_dir: Optional[str] = None, overwrite: bool = False,
             device: Optional[str] = None, target: Optional[EvalTarget] = None) -> tuple[Path, dict]:
    """Evaluate and write the results file; returns (its path, its content)."""
    import torch

    check_options(tasks, options)
    out_dir = Path(output_dir) if output_dir else None
    if out_dir is not None:
        _check_not_overwriting(out_dir / RESULTS_FILE, tasks, overwrite)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if target is None and options.reference and not checkpoint and not model:
        if list(tasks) != ["humaneval"]:
            raise EvalInputError("--reference without a model scores HumanEval's canonical solutions only: "
                                 "use --tasks humaneval")
        target = EvalTarget(None, None, "causal_lm", {"base_model": None, "reference_solutions": True})
        out_dir = out_dir or Path("results") / "humaneval_reference"
    target = target or load_eval_target(checkpoint, model, device)
    out_dir = out_dir or default_output_dir(target, checkpoint, model)
    path = out_dir / RESULTS_FILE
    existing = _check_not_overwriting(path, tasks, overwrite)

    results: dict[str, dict] = {}
    for name in tasks:
        start = time.perf_counter()
        res: TaskResult = get_task(name).run(target, options)
        entry = {"metrics": res.metrics, "n": res.n, "prompt_format": res.prompt_format, **res.details,
                 "seconds": time.perf_counter() - start, "options": asdict(options)}
        if options.log_samples and res.samples:
            sample_file = out_dir / f"eval_samples_{name}.jsonl"
            atomic_write_text(sample_file, "".join(json.dumps(s, default=str) + "\n" for s in res.samples))
            entry["samples_file"] = sample_file.name
        results[name] = entry
    content = {
        "model": target.identity,
        "task_type": target.task_type,
        "device": device,
        "tasks": {**existing.get("tasks", {}), **results},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": library_versions(),
        "git_commit": git_commit(),
    }
    atomic_write_json(path, content)
    return path, content


def _check_not_overwriting(path: Path, tasks: Sequence[str], overwrite: bool) -> dict:
    if not path.is_file():
        return {}
    try:
        existing = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise EvalInputError(f"{path} exists but is not valid JSON; move it away or pass --overwrite") from None
    clash = sorted(set(tasks) & set(existing.get("tasks", {})))
    if clash and not overwrite:
        raise EvalInputError(f"{path} already holds results for {', '.join(clash)}; pass --overwrite to replace them")
    return existing
