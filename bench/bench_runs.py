"""Training the arms of bench/strato_vs_baselines.py: each arm x seed once, a process each, a finished run reused
only if it was trained as its arm is defined now (``config_drift``), a STRATO run shared where its search shows it
would train another arm's run exactly; and the untrained model's score."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

from bench_arms import REFERENCE_ARM, TASKS, arm_config, arms, run_name
from common import flat_keys

CLI = Path(__file__).resolve().with_name("strato_vs_baselines.py")  # what each isolated run executes


def trained_setting(run_dir: Path, key: str) -> Any:
    """A setting a finished run was trained with (dotted ``key`` in its config_used.yaml); None if unreadable."""
    import yaml

    try:
        value = yaml.safe_load((run_dir / "config_used.yaml").read_text())
        for part in key.split("."):
            value = value[part]
        return value
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None


DRIFT_IGNORED = ("logging.", "device_info.")  # where a run writes and what it reports: not what it trained


def config_drift(run_dir: Path, cfg: Any) -> list[str]:
    """The settings a finished run was trained with that differ from ``cfg`` (its config_used.yaml against the
    config this benchmark builds now, e.g. after a default changed), as ``key: was -> now``; settings the run's
    config predates are not compared. An unreadable config_used.yaml is one line saying so."""
    import yaml

    try:
        used = yaml.safe_load((run_dir / "config_used.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"config_used.yaml unreadable ({exc})"]
    was, now = flat_keys(used if isinstance(used, dict) else {}), flat_keys(cfg.to_yaml_dict())
    ignored = DRIFT_IGNORED + (() if cfg.peft.method == "strato" else ("peft.strato.",))  # unused by other methods
    return [f"{k}: {was[k]!r} -> {now[k]!r}" for k in sorted(set(was) & set(now))
            if not k.startswith(ignored) and was[k] != now[k]]


def run_arms(task: str, names: list[str], seeds: list[int], runs_dir: Path, isolate: bool = True,
             validation: Optional[int] = None, learning_rate: Optional[float] = None,
             lr_protocol: str = "tuned", share: bool = False) -> list[dict[str, Any]]:
    """Train every arm x seed that is not complete yet; one failure does not stop the others. With ``isolate``
    each run gets a fresh process, so that its peak memory (RSS, GPU) and wall time are its own. A complete run
    trained with other settings than this benchmark asks (another lr protocol, a default changed since) is an
    error for that arm, never counted as this one's. With ``share`` a STRATO arm whose search shows that it would
    train a complete run exactly is recorded as that run instead of trained (``share_run``, bench/shared_runs.py)."""
    import subprocess

    from strato_peft.outputs import RunDirectory, run_dir_for
    from strato_peft.training.run import TrainOptions, train

    table = arms(task)
    log = []
    for seed in seeds:  # seed-major: a partial benchmark has every arm at the first seeds
        for arm in names:
            cfg = arm_config(task, arm, table[arm], seed, runs_dir, validation, learning_rate, lr_protocol)
            run = RunDirectory(run_dir_for(cfg))
            if share and cfg.peft.method == "strato" and not run.is_complete():
                try:
                    entry = share_run(task, arm, seed, cfg, runs_dir, validation, learning_rate, lr_protocol)
                except subprocess.CalledProcessError as exc:
                    entry = None
                    print(f"[plan] {arm} seed {seed}: strato plan exited with code {exc.returncode}; training it",
                          flush=True)
                if entry is not None:
                    log.append({"arm": arm, "seed": seed, "status": "shared", "same_as": entry["same_as"]})
                    continue
            if run.is_complete():
                drift = config_drift(run.final, cfg)
                if drift:
                    error = (f"{run.final} was trained with other settings than this benchmark's {arm} "
                             f"(--lr-protocol {lr_protocol}): {'; '.join(drift)}; give another --runs-dir")
                    log.append({"arm": arm, "seed": seed, "status": "failed", "error": error})
                    print(f"[fail] {arm} seed {seed}: {error}", flush=True)
                else:
                    print(f"[skip] {arm} seed {seed}: complete", flush=True)
                continue
            print(f"[run]  {arm} seed {seed}", flush=True)
            start = time.time()
            try:
                if isolate:
                    subprocess.run([sys.executable, str(CLI), "--task", task, "--arms", arm, "--seeds", str(seed),
                                    "--runs-dir", str(runs_dir.parent), "--in-process",
                                    "--lr-protocol", lr_protocol,
                                    *(["--validation", str(validation)] if validation else []),
                                    *(["--learning-rate", str(learning_rate)] if learning_rate is not None else [])],
                                   check=True)
                else:
                    train(cfg, TrainOptions(no_wandb=True, overwrite=run.final.exists() or run.staging.exists()))
                log.append({"arm": arm, "seed": seed, "status": "done", "seconds": time.time() - start})
            except subprocess.CalledProcessError as exc:  # the child printed its own traceback above
                error = f"its process exited with code {exc.returncode} (traceback in the output above)"
                log.append({"arm": arm, "seed": seed, "status": "failed", "error": error})
                print(f"[fail] {arm} seed {seed}: {error}", flush=True)
            except Exception as exc:  # noqa: BLE001 - recorded, the benchmark goes on
                log.append({"arm": arm, "seed": seed, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
                print(f"[fail] {arm} seed {seed}: {exc}", flush=True)
    return log


def share_run(task: str, arm: str, seed: int, cfg: Any, runs_dir: Path, validation: Optional[int] = None,
              learning_rate: Optional[float] = None, lr_protocol: str = "tuned") -> Optional[dict[str, Any]]:
    """The sharing record of STRATO ``arm`` at ``seed`` if its search (``strato plan``) shows it would train a
    complete run of the same seed exactly: LoRA's at the plan's uniform rank, else another STRATO arm's at the same
    budget (PPO where the gate skipped the search: the knapsack arm's). Written, or found from an earlier call; else
    None, with the reasons printed."""
    import json

    import shared_runs
    from strato_peft.outputs import RunDirectory, run_dir_for

    name = run_name(arm, seed, learning_rate)
    done = runs_dir / shared_runs.SHARED_DIR / f"{name}.json"
    if done.is_file():
        entry = json.loads(done.read_text())
        print(f"[skip] {arm} seed {seed}: the run of {entry['same_arm']} (recorded in {done})", flush=True)
        return entry
    print(f"[plan] {arm} seed {seed}", flush=True)
    plan = shared_runs.plan_for(cfg, runs_dir, name)
    table, why = arms(task), []
    lora_arm = f"lora_all_r{shared_runs.uniform_rank(plan)}"
    partners = ([lora_arm] if lora_arm in table else []) + [
        n for n, p in table.items() if n != arm and p.get("method") == "strato" and p.get("budget") == cfg.peft.budget]
    for other in partners:
        other_cfg = arm_config(task, other, table[other], seed, runs_dir, validation, learning_rate, lr_protocol)
        other_run = RunDirectory(run_dir_for(other_cfg))
        if not other_run.is_complete():
            why.append(f"{other}: not complete")
            continue
        drift = config_drift(other_run.final, other_cfg)
        if drift:  # its run was trained as the arm was defined then, not now
            why.append(f"{other}: its run was trained with other settings ({'; '.join(drift)})")
            continue
        if other == lora_arm:
            diff = shared_runs.differences(cfg, plan, other_cfg, other_run.final)
        else:
            other_plan = json.loads((other_run.final / "adapter" / "strato_plan.json").read_text())
            diff = shared_runs.strato_differences(cfg, plan, other_cfg, other_plan)
        if diff:
            why.append(f"{other}: {'; '.join(diff)}")
            continue
        entry = {"arm": arm, "seed": seed, "same_arm": other, "same_as": str(other_run.final),
                 "plan": str(runs_dir / shared_runs.PLANS_DIR / f"{name}.json"),
                 "search_seconds": plan["search"]["total_seconds"], "map_gain": plan["search"]["map_gain"],
                 "skipped": plan["search"]["skipped"]}
        path = shared_runs.record(runs_dir, name, entry)
        print(f"[share] {arm} seed {seed}: the run of {other} (gate closed: {entry['skipped']}; {path})", flush=True)
        return entry
    print(f"[plan] {arm} seed {seed}: no complete run trains the same ({' | '.join(why) or 'no candidate'}); "
          "training it", flush=True)
    return None


def base_model_score(task: str, runs_dir: Path) -> dict[str, Any]:
    """The untrained model's score on the task's held-out split (the floor training must lift), cached in
    ``runs_dir/base_model_eval.json``."""
    import json

    from strato_peft.eval.base import EvalOptions, get_task
    from strato_peft.eval.target import EvalTarget
    from strato_peft.models import load_model, load_tokenizer
    from strato_peft.outputs import atomic_write_json
    from strato_peft.platform import default_weight_dtype, resolve_platform

    path = runs_dir / "base_model_eval.json"
    if path.is_file():
        return json.loads(path.read_text())
    cfg = arm_config(task, REFERENCE_ARM, {}, 42, runs_dir)
    eval_task, metric = TASKS[task]["metric"].split("/", 1)
    platform = resolve_platform(cfg.device_info.device_type, cfg.device_info.mixed_precision)
    start = time.time()
    model = load_model(cfg.model, "causal_lm", None, platform.device, default_weight_dtype(platform.device))
    target = EvalTarget(model.eval(), load_tokenizer(cfg.model), "causal_lm", {"base_model": cfg.model.name},
                        run_config=cfg)
    res = get_task(eval_task).run(target, EvalOptions(batch_size=64))
    out = {"metric": TASKS[task]["metric"], "value": res.metrics[metric], "n": res.n, "prompt_format": res.prompt_format,
           "seconds": time.time() - start, "device": str(platform.device)}
    atomic_write_json(path, out)
    return out


def held_out_size(run_dir: Path) -> Optional[int]:
    """How many held-out (or validation) rows scored the run, from its metrics.json; None if unreadable."""
    import json

    try:
        return int(json.loads((run_dir / "metrics.json").read_text())["data"]["n_eval"])
    except (OSError, KeyError, TypeError, ValueError):
        return None
