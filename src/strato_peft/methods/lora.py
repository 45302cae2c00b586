"""LoRA and its variants that peft expresses as LoraConfig options: DoRA, rsLoRA, PiSSA, OLoRA, QLoRA."""

from __future__ import annotations

from typing import Any

from strato_peft.methods.base import MethodContext, MethodSpec, peft_task_type
from strato_peft.methods.registry import register


def lora_config(ctx: MethodContext, **options: Any):
    """A peft LoraConfig from the ``peft`` section, with variant-specific ``options`` on top."""
    from peft import LoraConfig

    p = ctx.peft
    init = options.pop("init_lora_weights", True)
    if ctx.dry_run and init not in (True, False, "gaussian"):
        init = True  # SVD-based initialisations need real weights; parameter counts are unchanged
    kwargs: dict[str, Any] = dict(
        r=p.rank,
        lora_alpha=p.alpha,
        lora_dropout=p.dropout,
        target_modules=p.target_modules,
        bias=p.bias,
        modules_to_save=p.modules_to_save,
        task_type=peft_task_type(ctx.task_type),
        init_lora_weights=init,
    )
    kwargs.update(options)
    kwargs.update(p.extra)
    return LoraConfig(**kwargs)


register(MethodSpec("lora", "LoRA: low-rank updates B@A scaled by alpha/r.", lora_config))
register(MethodSpec("dora", "DoRA: LoRA with a learned per-column magnitude.", lambda c: lora_config(c, use_dora=True)))
register(MethodSpec("rslora", "rsLoRA: LoRA scaled by alpha/sqrt(r).", lambda c: lora_config(c, use_rslora=True)))
register(MethodSpec("pissa", "PiSSA: LoRA initialised from the principal singular vectors.",
                    lambda c: lora_config(c, init_lora_weights="pissa")))
def olora_config(ctx: MethodContext):
    """OLoRA; peft's QR initialisation assumes nn.Linear weights, so GPT-2-style Conv1D layers are refused."""
    from transformers.pytorch_utils import Conv1D

    from strato_peft.errors import ConfigError

    if any(isinstance(m, Conv1D) for m in ctx.model.modules()):
        raise ConfigError("peft.method: olora does not support GPT-2-style Conv1D layers (peft's QR initialisation "
                          "assumes nn.Linear weights); use lora, pissa or dora on this model")
    return lora_config(ctx, init_lora_weights="olora")


register(MethodSpec("olora", "OLoRA: LoRA initialised by a QR decomposition of the weights.", olora_config))
register(MethodSpec("qlora", "QLoRA: LoRA on a 4-bit (bitsandbytes NF4) base model.", lora_config, quantization="4bit"))
