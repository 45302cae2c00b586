"""IA3: learned rescaling vectors on keys, values and feed-forward activations."""

from __future__ import annotations

from strato_peft.methods.base import MethodContext, MethodSpec, peft_task_type
from strato_peft.methods.registry import register

# Module-name suffixes that peft's IA3 treats as feed-forward (scaling their input rather than output).
_FEEDFORWARD_HINTS = ("down_proj", "fc2", "c_proj", "output.dense", "w2", "mlp.c_proj", "fc_out")


def ia3_config(ctx: MethodContext):
    """A peft IA3Config; when target_modules are given, the feed-forward ones are picked out by name."""
    from peft import IA3Config

    targets = ctx.peft.target_modules
    ff = None
    if isinstance(targets, list):
        ff = [t for t in targets if any(t.endswith(h) or h.endswith(t) for h in _FEEDFORWARD_HINTS)]
    kwargs = dict(target_modules=targets, feedforward_modules=ff, task_type=peft_task_type(ctx.task_type),
                  modules_to_save=ctx.peft.modules_to_save)
    kwargs.update(ctx.peft.extra)
    return IA3Config(**kwargs)


register(MethodSpec("ia3", "IA3: learned scaling of keys, values and feed-forward inputs.", ia3_config, uses_rank=False))
