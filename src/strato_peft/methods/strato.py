"""STRATO-PEFT placeholder registration: configs validate and --dry-run costs the reference LoRA; the
allocation search lands with issue 5, until then training with it stops with a clear error."""

from __future__ import annotations

from strato_peft.errors import ConfigError
from strato_peft.methods.base import MethodContext, MethodSpec
from strato_peft.methods.lora import lora_config
from strato_peft.methods.registry import register


def strato_config(ctx: MethodContext):
    """Dry runs cost the reference LoRA the budget is relative to; real training is not available yet."""
    if ctx.dry_run:
        return lora_config(ctx, use_rslora=True)
    raise ConfigError("peft.method: 'strato' allocation is not implemented yet (issue 5); use --dry-run to cost "
                      "its reference LoRA, or method lora/dora/adalora to train")


register(MethodSpec("strato", "STRATO-PEFT: cost-aware LoRA placement and ranks (search lands with issue 5).",
                    strato_config))
