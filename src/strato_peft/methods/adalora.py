"""AdaLoRA: SVD-form adapters whose ranks are re-allocated during training by importance.

The HF Trainer never calls ``update_and_allocate``; :class:`AdaLoraAllocationCallback` does, after every
optimizer step and before the gradients are zeroed (when the importance scores need them).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from strato_peft.methods.base import MethodContext, MethodSpec, peft_task_type
from strato_peft.methods.registry import register


def adalora_config(ctx: MethodContext):
    """A peft AdaLoraConfig: starts at ``init_rank`` (default 1.5 x rank) and prunes to an average of ``rank``."""
    from peft import AdaLoraConfig

    p = ctx.peft
    total = max(int(ctx.total_steps), 1)
    tinit = p.adalora_tinit if p.adalora_tinit is not None else int(0.1 * total)
    tfinal = p.adalora_tfinal if p.adalora_tfinal is not None else int(0.2 * total)
    if tinit + tfinal >= total:  # peft requires a non-empty budgeting phase
        tinit, tfinal = 0, max(total // 5, 0)
        if tinit + tfinal >= total:
            tfinal = 0
    kwargs: dict[str, Any] = dict(
        init_r=p.init_rank or max(p.rank + 1, int(round(1.5 * p.rank))),
        target_r=p.rank,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=p.adalora_delta_t,
        total_step=total,
        lora_alpha=p.alpha,
        lora_dropout=p.dropout,
        target_modules=p.target_modules,
        modules_to_save=p.modules_to_save,
        task_type=peft_task_type(ctx.task_type),
    )
    kwargs.update(p.extra)
    return AdaLoraConfig(**kwargs)


class AdaLoraAllocationCallback(TrainerCallback):
    """Calls ``update_and_allocate`` after each optimizer step, as AdaLoRA requires."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls = 0

    def on_optimizer_step(self, args, state, control, **kwargs):  # noqa: D102 - TrainerCallback hook
        self.model.base_model.update_and_allocate(state.global_step)
        self.calls += 1


register(MethodSpec("adalora", "AdaLoRA: adaptive rank allocation by importance.", adalora_config,
                    callbacks=lambda model: [AdaLoraAllocationCallback(model)]))
