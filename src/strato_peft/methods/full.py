"""Full fine-tuning: every weight trained, no adapter (the reference the PEFT methods are measured against)."""

from __future__ import annotations

from strato_peft.methods.base import MethodContext, MethodSpec
from strato_peft.methods.registry import register


def no_adapter(ctx: MethodContext) -> None:
    """Full fine-tuning applies no peft config."""
    return None


register(MethodSpec("full", "Full fine-tuning of every weight.", no_adapter, uses_rank=False))
