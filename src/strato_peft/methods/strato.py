"""STRATO-PEFT as a method: search an allocation before training, train it as rsLoRA, export a plain peft adapter.

The search itself lives in ``strato_peft.strato`` (planner.py); this module only plugs it into the training run:
``build`` runs the search and returns the LoraConfig of the chosen allocation, ``save`` writes the plain adapter
(see strato/export.py) and ``strato_plan.json`` next to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from strato_peft.errors import ConfigError
from strato_peft.methods.base import MethodContext, MethodSpec, peft_task_type
from strato_peft.methods.registry import register

PLAN_FILE = "strato_plan.json"


def strato_config(ctx: MethodContext):
    """The rsLoRA config of the searched allocation (a dry run previews the budget on the meta device)."""
    from strato_peft.strato.export import training_lora_config
    from strato_peft.strato.planner import make_plan, preview_plan
    from strato_peft.training.seed import preserved_rng

    if ctx.dry_run:
        cfg = _cfg_for_preview(ctx)
        plan = preview_plan(cfg, ctx.model)
    else:
        if ctx.run is None:
            raise ConfigError("peft.method: strato needs the run's data to search (use strato train)")
        r = ctx.run
        # the search draws no number the training would have drawn: LoRA's A init and the dropout masks after it are
        # those of a LoRA run of the same seed, so a STRATO run that trains the uniform LoRA trains exactly that LoRA
        with preserved_rng():
            plan = make_plan(r.cfg, ctx.model, r.tokenizer, r.data, r.platform, ctx.total_steps, r.fast_dev_run)
    ctx.state["plan"] = plan
    ctx.artifacts["strato"] = plan.summary()
    if not ctx.dry_run and ctx.peft.strato.scheduler:
        ctx.state["scheduler"] = _scheduler(plan, ctx)
        ctx.callbacks.append(ctx.state["scheduler"])
    p = ctx.peft
    return training_lora_config(plan.allocation, plan.alpha, p.dropout, peft_task_type(ctx.task_type),
                                p.modules_to_save, p.bias)


def initialize_strato(model: Any, ctx: MethodContext) -> None:
    """Start LoRA as the probes did (``peft.strato.init``: peft's random A by default, or gradient-aligned)."""
    from strato_peft.strato.init import apply_init

    ctx.artifacts["strato"]["init"] = apply_init(model, ctx.peft.strato.init, ctx.state["plan"].directions,
                                                 ctx.peft.strato.init_min_rank)


def _scheduler(plan: Any, ctx: MethodContext) -> Any:
    """The rank scheduler, held to the plan's budget (every weighted dimension)."""
    from strato_peft.strato.scheduler import RankScheduler

    budget = plan.budget

    def fits(allocation: dict[str, int]) -> bool:
        return all(u <= 1.0 + 1e-9 for u in budget.usage(budget.cost_model.allocation(allocation)).values())

    s = ctx.peft.strato
    return RankScheduler(fits, interval=s.scheduler_interval, max_rank=s.max_rank, seed=ctx.run.cfg.seed)


def _cfg_for_preview(ctx: MethodContext) -> Any:
    """Dry runs get only the peft section; the batch shape only affects the memory dimension."""
    if ctx.run is not None:
        return ctx.run.cfg
    from strato_peft.config.schema import StratoConfig

    return StratoConfig(peft=ctx.peft.model_dump(by_alias=True))


def save_strato(model: Any, target: Path, ctx: MethodContext) -> None:
    """Export the plain peft adapter and write strato_plan.json (plan, final ranks, exported config) beside it."""
    from strato_peft.outputs import atomic_write_json
    from strato_peft.strato.export import export_plain_adapter

    exported = export_plain_adapter(model, target)
    record = ctx.state["plan"].as_dict()
    record["final_ranks"] = exported["rank_pattern"]
    record["exported_config"] = exported
    scheduler = ctx.state.get("scheduler")
    if scheduler is not None:
        record["scheduler"] = scheduler.report()
        ctx.artifacts["strato"]["scheduler_events"] = len(record["scheduler"].get("history", []))
    ctx.artifacts["strato"]["final_total_rank"] = int(sum(exported["rank_pattern"].values()))
    atomic_write_json(target / PLAN_FILE, record)


register(MethodSpec("strato", "STRATO-PEFT: cost-aware LoRA placement and ranks under a budget (plain LoRA out).",
                    strato_config, save=save_strato, initialize=initialize_strato))
