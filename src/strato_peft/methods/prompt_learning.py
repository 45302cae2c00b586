"""Prefix tuning and prompt tuning: trainable virtual tokens in front of every sequence."""

from __future__ import annotations

from strato_peft.methods.base import MethodContext, MethodSpec, peft_task_type
from strato_peft.methods.registry import register


def prefix_config(ctx: MethodContext):
    """A peft PrefixTuningConfig with ``num_virtual_tokens`` trainable key/value prefixes per layer."""
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(num_virtual_tokens=ctx.peft.num_virtual_tokens,
                              task_type=peft_task_type(ctx.task_type), **ctx.peft.extra)


def prompt_config(ctx: MethodContext):
    """A peft PromptTuningConfig; initialised from ``prompt_init_text`` when given, else randomly."""
    from peft import PromptTuningConfig, PromptTuningInit

    p = ctx.peft
    kwargs = dict(num_virtual_tokens=p.num_virtual_tokens, task_type=peft_task_type(ctx.task_type))
    if p.prompt_init_text:
        name = getattr(ctx.model.config, "_name_or_path", None)
        kwargs.update(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=p.prompt_init_text,
                      tokenizer_name_or_path=name)
    kwargs.update(p.extra)
    return PromptTuningConfig(**kwargs)


register(MethodSpec("prefix_tuning", "Prefix tuning: trainable key/value prefixes in every layer.", prefix_config,
                    uses_rank=False))
register(MethodSpec("prompt_tuning", "Prompt tuning: trainable input embeddings prepended to the prompt.",
                    prompt_config, uses_rank=False))
