"""Access to a peft model's LoRA layers by full base-model module name (what STRATO's allocations are keyed by)."""

from __future__ import annotations

from typing import Any

import torch

from strato_peft.strato.allocation import Allocation


def lora_layers(model: torch.nn.Module, adapter: str = "default") -> dict[str, Any]:
    """Full base-model module name -> peft LoraLayer carrying ``adapter`` (as nn.Linear lora_A/lora_B)."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n: m for n, m in base.named_modules()
            if isinstance(m, LoraLayer) and adapter in m.r and adapter in m.lora_A}


def current_ranks(model: torch.nn.Module, adapter: str = "default") -> Allocation:
    """The ranks the model's LoRA layers have now (after any scheduler changes)."""
    return {n: int(m.r[adapter]) for n, m in lora_layers(model, adapter).items()}
