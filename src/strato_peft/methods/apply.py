"""Turn a base model into the model to train: build the method's peft config, check it, wrap the model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import torch

from strato_peft.config.schema import PeftConfigSection
from strato_peft.errors import ConfigError
from strato_peft.methods.base import MethodContext, MethodSpec, RunInputs, TaskType
from strato_peft.methods.registry import get_method
from strato_peft.models import adaptable_module_names


def load_peft_config_file(path: str | Path):
    """A peft config from a peft-style JSON file (the adapter_config.json format), used as is."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"peft.config_file: file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"peft.config_file {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    peft_type = str(data.get("peft_type", "")).upper()
    known = {str(k.value if hasattr(k, "value") else k): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    if peft_type not in known:
        raise ConfigError(f"peft.config_file {path}: 'peft_type' must be one of {sorted(known)}, got {peft_type!r}")
    try:
        return known[peft_type](**data)
    except TypeError as exc:
        raise ConfigError(f"peft.config_file {path}: {exc}") from None


def check_target_modules(model: torch.nn.Module, targets: Any) -> None:
    """Fail with the list of adaptable modules when a target name (or regex) matches no module."""
    if targets is None or targets == "all-linear":
        return
    names = [n for n, _ in model.named_modules() if n]
    if isinstance(targets, str):
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError(
            f"peft.target_modules: {', '.join(map(repr, missing))} matches no module of this model; "
            f"adaptable modules: {', '.join(adaptable_module_names(model))}"
        )


def build_peft_config(spec: MethodSpec, ctx: MethodContext):
    """The peft config this run applies (None for full fine-tuning)."""
    if ctx.peft.config_file:
        return load_peft_config_file(ctx.peft.config_file)
    try:
        return spec.build(ctx)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"peft ({spec.name}): {str(exc).splitlines()[0]}") from None


def apply_method(model: torch.nn.Module, peft: PeftConfigSection, task_type: TaskType, total_steps: int = 1,
                 dry_run: bool = False, gradient_checkpointing: bool = False, run: Optional[RunInputs] = None
                 ) -> tuple[torch.nn.Module, MethodSpec, Optional[Any], MethodContext]:
    """Wrap ``model`` for training with the configured method; returns (model, method, peft config, context)."""
    spec = get_method(peft.method)
    ctx = MethodContext(peft=peft, task_type=task_type, model=model, total_steps=total_steps, dry_run=dry_run,
                        run=run)
    config = build_peft_config(spec, ctx)
    if config is None:
        for param in model.parameters():
            param.requires_grad_(True)
        return model, spec, None, ctx
    check_target_modules(model, getattr(config, "target_modules", None))
    from peft import get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    try:
        peft_model = get_peft_model(model, config, low_cpu_mem_usage=dry_run)
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "target" in msg.lower():
            raise ConfigError(f"peft.target_modules: {msg}; adaptable modules: "
                              f"{', '.join(adaptable_module_names(model))}") from None
        raise ConfigError(f"peft ({spec.name}): {msg}") from None
    if spec.initialize is not None and not dry_run:
        spec.initialize(peft_model, ctx)
    return peft_model, spec, config, ctx
