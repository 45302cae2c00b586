"""One training run end to end: check inputs, load data and model, apply the method, train, save atomically.

Everything that can be wrong with the input (config, data, model, target modules, output folder) is checked
before the first byte is written; results appear in their final folder only once complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from strato_peft.config.schema import StratoConfig
from strato_peft.cost import cost_report
from strato_peft.data import TaskData, load_task_data
from strato_peft.data.sources import PACKAGED_LABELS, check_source, task_type_of
from strato_peft.errors import DataError
from strato_peft.eval.class_metrics import prior_warning
from strato_peft.methods.apply import apply_method
from strato_peft.methods.base import MethodContext, MethodSpec, RunInputs
from strato_peft.methods.registry import get_method
from strato_peft.outputs import RunDirectory, atomic_write_json, run_dir_for, write_config
from strato_peft.platform import PlatformInfo, default_weight_dtype, resolve_platform
from strato_peft.provenance import git_commit, library_versions, peak_memory, start_memory_window


@dataclass
class TrainOptions:
    """Run-time switches from the CLI (they never change what is trained, only how and where)."""

    output_dir: Optional[str] = None
    overwrite: bool = False
    resume: bool = False
    fast_dev_run: bool = False
    platform: Optional[str] = None
    no_wandb: bool = False
    profile: bool = False  # capture a torch.profiler window of 10 steps per epoch (TensorBoard trace)
    experiment_tag: Optional[str] = None  # model/task/phase/lambdaX_rankY_seedZ, set by `strato run`
    extra_callbacks: list = field(default_factory=list)


@dataclass
class RunResult:
    """Where a finished run's results are, and its metrics."""

    run_dir: Path
    metrics: dict[str, Any]
    model: Any = field(default=None, repr=False)  # the trained model, in memory (for notebooks and tests)
    tokenizer: Any = field(default=None, repr=False)


def _weight_dtype(cfg: StratoConfig, platform: PlatformInfo) -> torch.dtype:
    if cfg.model.dtype != "auto":
        return getattr(torch, cfg.model.dtype)
    return default_weight_dtype(platform.device)


def _num_labels(cfg: StratoConfig, data: Optional[TaskData] = None) -> Optional[int]:
    if data is not None and data.label_names:
        return len(data.label_names)
    if cfg.task.label_names:
        return len(cfg.task.label_names)
    return len(PACKAGED_LABELS.get(cfg.task.name.lower(), [])) or 2


def _total_steps(cfg: StratoConfig, n_train: int, fast_dev_run: bool) -> int:
    t = cfg.training
    if fast_dev_run:
        return min(t.max_steps, 3) if t.max_steps > 0 else 3
    if t.max_steps > 0:
        return t.max_steps
    per_epoch = math.ceil(n_train / (t.batch_size * t.gradient_accumulation_steps))
    return max(1, math.ceil(per_epoch * t.num_epochs))


def _report_to(cfg: StratoConfig, options: TrainOptions, staging: Path) -> list[str]:
    if cfg.logging.wandb and not options.no_wandb:
        os.environ.setdefault("WANDB_MODE", cfg.logging.wandb_mode)
        os.environ.setdefault("WANDB_PROJECT", cfg.logging.wandb_project)
        os.environ["WANDB_DIR"] = str(staging)
        if options.experiment_tag:
            os.environ["WANDB_NAME"] = options.experiment_tag
        return ["wandb"]
    return []


def _loss_curve(log_history: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    train = [{k: e[k] for k in ("step", "epoch", "loss", "learning_rate", "grad_norm") if k in e}
             for e in log_history if "loss" in e]
    evals = [{k: v for k, v in e.items() if k.startswith("eval_") or k in ("step", "epoch")}
             for e in log_history if any(k.startswith("eval_") for k in e)]
    return train, evals


def _save_model(model: Any, tokenizer: Any, spec: MethodSpec, ctx: MethodContext, staging: Path) -> Path:
    """Save the adapter in peft's format (adapter/), or the whole model for full fine-tuning (model/); a method
    with its own ``save`` (STRATO's plain export) writes the folder itself."""
    target = staging / ("model" if spec.name == "full" else "adapter")
    if spec.save is not None:
        spec.save(model, target, ctx)
    else:
        model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def _load_inputs(cfg: StratoConfig, options: TrainOptions, platform: PlatformInfo) -> tuple[TaskData, Any, Any]:
    """The run's data (a few rows in a fast dev run), tokenizer and base model, seeded as training starts."""
    from strato_peft.models import load_model, load_tokenizer
    from strato_peft.training.seed import seed_everything

    data = load_task_data(cfg.task, cfg.seed)
    if options.fast_dev_run:
        data.train, data.eval = data.train[:16], data.eval[:8]
        data.info.update(n_train=len(data.train), n_eval=len(data.eval), fast_dev_run_subset=True)
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    id2label = dict(enumerate(data.label_names)) if data.label_names else None
    model = load_model(cfg.model, data.task_type, _num_labels(cfg, data), platform.device,
                       _weight_dtype(cfg, platform), id2label=id2label)
    return data, tokenizer, model


def train(cfg: StratoConfig, options: Optional[TrainOptions] = None) -> RunResult:
    """Train ``cfg`` and write results/<model>/<task>/<run>/ (see outputs.py for the layout)."""
    from strato_peft.training.arguments import common_arguments
    from strato_peft.training.callbacks import ProfilerCallback, WallClockCallback, tensorboard_callback
    from strato_peft.training.trainers import build_trainer

    options = options or TrainOptions()
    started = time.time()
    runs_before = start_memory_window()
    platform = resolve_platform(cfg.device_info.device_type, cfg.device_info.mixed_precision, options.platform)
    run = RunDirectory(run_dir_for(cfg, options.output_dir))
    run.check(options.overwrite, options.resume)
    spec = get_method(cfg.peft.method)
    check_source(cfg.task)
    if cfg.task.eval_tasks:
        from strato_peft.eval import EvalOptions
        from strato_peft.eval.runner import check_options

        check_options(cfg.task.eval_tasks, EvalOptions())

    data, tokenizer, model = _load_inputs(cfg, options, platform)
    task_type = data.task_type
    total_steps = _total_steps(cfg, len(data.train), options.fast_dev_run)
    inputs = RunInputs(cfg=cfg, data=data, tokenizer=tokenizer, platform=platform, fast_dev_run=options.fast_dev_run)
    model, spec, peft_config, method_ctx = apply_method(model, cfg.peft, task_type, total_steps,
                                                        gradient_checkpointing=cfg.training.gradient_checkpointing,
                                                        run=inputs)
    costs = cost_report(model, cfg.training.batch_size, cfg.task.max_length, cfg.training.gradient_checkpointing,
                        platform.mixed_precision)

    resume_from = run.prepare(options.overwrite, options.resume)
    clock = WallClockCallback()
    callbacks = [clock, *spec.callbacks(model), *method_ctx.callbacks, *options.extra_callbacks]
    if cfg.logging.tensorboard:
        callbacks.append(tensorboard_callback(run.staging / "logs"))
    if options.profile:
        callbacks.append(ProfilerCallback(run.staging / "logs" / "profiler"))
    args = common_arguments(cfg, platform, run.checkpoints, options.fast_dev_run,
                            _report_to(cfg, options, run.staging))
    try:
        trainer, dropped = build_trainer(cfg, task_type, model, tokenizer, data, args, callbacks)
        if len(trainer.train_dataset) == 0:
            raise DataError(f"task.max_length: every training example is longer than {cfg.task.max_length} tokens")
    except DataError:
        if resume_from is None:  # bad input leaves nothing behind
            shutil.rmtree(run.staging, ignore_errors=True)
        raise

    tokens_before = 0
    if resume_from is not None:
        tokens_before = json.loads((resume_from / "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)
    train_out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    session_tokens = trainer.state.num_input_tokens_seen - tokens_before
    final_eval = trainer.evaluate() if cfg.training.final_eval else {}
    if "eval_loss" in final_eval and task_type == "causal_lm":
        final_eval["eval_perplexity"] = float(math.exp(min(final_eval["eval_loss"], 50)))
    stuck = prior_warning(final_eval, "eval_") if task_type == "classification" else None
    warnings = [stuck] if stuck else []
    saved = _save_model(trainer.model, tokenizer, spec, method_ctx, run.staging)
    loss_curve, eval_curve = _loss_curve(trainer.state.log_history)

    metrics = {
        "run": {"name": run.final.name, "experiment_tag": options.experiment_tag, "seed": cfg.seed,
                "method": spec.name, "model": cfg.model.name, "model_path": cfg.model.path, "task": cfg.task.name,
                "task_type": task_type,
                "resumed_from": str(resume_from.name) if resume_from else None,
                "fast_dev_run": options.fast_dev_run, "saved": saved.name,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "loss_curve": loss_curve,
        "eval_curve": eval_curve,
        "final_eval": final_eval,
        "warnings": warnings,  # what a reader of final_eval must know (a classifier stuck at the class prior)
        "train": {"train_loss": train_out.training_loss, "global_steps": trainer.state.global_step,
                  "epochs": trainer.state.epoch, "train_examples": len(trainer.train_dataset),
                  "dropped_too_long": dropped, "tokens_seen": trainer.state.num_input_tokens_seen,
                  "session_train_seconds": clock.seconds,
                  "tokens_per_second": session_tokens / clock.seconds if clock.seconds else None},
        "params": {"trainable": costs.trainable_params, "total": costs.total_params,
                   "trainable_percent": 100.0 * costs.trainable_params / max(costs.total_params, 1)},
        "cost": {"adapter_flops_per_token": costs.adapter_flops_per_token,
                 "base_flops_per_token": costs.base_flops_per_token,
                 "memory_estimate_bytes": costs.memory_estimate_bytes,
                 "memory_breakdown": costs.memory_breakdown},
        **method_ctx.artifacts,
        "peak_memory": peak_memory(runs_before),
        "wall_time_seconds": time.time() - started,
        "platform": platform.as_dict(),
        "data": data.info,
        "versions": library_versions(),
        "git_commit": git_commit(),
    }
    write_config(run.staging / "config_used.yaml", cfg)
    atomic_write_json(run.staging / "metrics.json", metrics)
    if cfg.task.eval_tasks:  # before finalize: a run is complete only with the evaluations its config asks for
        _evaluate_after_training(cfg, trainer.model, tokenizer, task_type, run.staging, run.final,
                                 options.fast_dev_run)
    final = run.finalize()
    return RunResult(final, metrics, model=trainer.model, tokenizer=tokenizer)


def _evaluate_after_training(cfg: StratoConfig, model: Any, tokenizer: Any, task_type: str, staging: Path,
                             final: Path, fast_dev_run: bool) -> None:
    """Run the config's ``task.eval_tasks`` on the trained model; results go to eval_results.json in the run's
    staging folder, which becomes the run folder once they are written."""
    from strato_peft.eval import EvalOptions
    from strato_peft.eval.runner import evaluate
    from strato_peft.eval.target import EvalTarget

    model.eval()
    identity = {"base_model": cfg.model.path or cfg.model.name, "adapter": str(final / "adapter"),
                "evaluated": "in memory, right after training"}
    target = EvalTarget(model, tokenizer, task_type, identity, run_dir=staging, run_config=cfg)
    batch = cfg.training.eval_batch_size or cfg.training.batch_size
    evaluate(cfg.task.eval_tasks, EvalOptions(limit=8 if fast_dev_run else cfg.task.eval_limit, batch_size=batch),
             target=target, output_dir=str(staging))


def dry_run(cfg: StratoConfig, options: Optional[TrainOptions] = None) -> dict[str, Any]:
    """Cost the configured plan on the meta device (no weights, no data loading, nothing written)."""
    from strato_peft.models import build_meta_model

    options = options or TrainOptions()
    platform = resolve_platform(cfg.device_info.device_type, cfg.device_info.mixed_precision, options.platform)
    check_source(cfg.task)
    task_type = task_type_of(cfg.task)
    model = build_meta_model(cfg.model, task_type, _num_labels(cfg) if task_type == "classification" else None)
    model, spec, peft_config, method_ctx = apply_method(model, cfg.peft, task_type, total_steps=100, dry_run=True)
    costs = cost_report(model, cfg.training.batch_size, cfg.task.max_length, cfg.training.gradient_checkpointing,
                        platform.mixed_precision)
    return {"method": spec.name, "task_type": task_type, "platform": platform.name,
            "run_dir": str(run_dir_for(cfg, options.output_dir)), **costs.as_dict(), **method_ctx.artifacts}


def search_plan(cfg: StratoConfig, options: Optional[TrainOptions] = None) -> dict[str, Any]:
    """STRATO's search alone: the plan ``strato train`` would train for ``cfg`` (same data, weights, seed and step
    count, through the same code), as its strato_plan.json records it; nothing is trained or written."""
    from strato_peft.errors import ConfigError
    from strato_peft.methods.apply import build_peft_config

    if cfg.peft.method != "strato":
        raise ConfigError(f"peft.method: the search needs strato, got {cfg.peft.method!r}")
    options = options or TrainOptions()
    platform = resolve_platform(cfg.device_info.device_type, cfg.device_info.mixed_precision, options.platform)
    check_source(cfg.task)
    data, tokenizer, model = _load_inputs(cfg, options, platform)
    inputs = RunInputs(cfg=cfg, data=data, tokenizer=tokenizer, platform=platform, fast_dev_run=options.fast_dev_run)
    ctx = MethodContext(peft=cfg.peft, task_type=data.task_type, model=model,
                        total_steps=_total_steps(cfg, len(data.train), options.fast_dev_run), run=inputs)
    build_peft_config(get_method("strato"), ctx)
    return {**ctx.state["plan"].as_dict(), "run_dir": str(run_dir_for(cfg, options.output_dir))}
