"""First-order costs of a (peft-wrapped) model: parameters, adapter FLOPs per token, training memory.

FLOPs count a multiply-add as 2. A LoRA module of rank r on a d_in -> d_out layer costs 2r(d_in + d_out) FLOPs
per token forward, and twice that backward (the gradient w.r.t. its input and w.r.t. A and B): 6r(d_in + d_out);
the per-module formula is ``LoraCostModel``'s (strato_peft.cost.model), the one source of truth.
The memory estimate is deliberately simple (weights + gradients + AdamW state + activations) and is documented
as an estimate; issue 5's cost model checks it against measured peaks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch


@dataclass
class CostReport:
    """Costs of one configured model for a given batch shape."""

    trainable_params: int
    total_params: int
    adapter_flops_per_token: int
    base_flops_per_token: int
    memory_estimate_bytes: int
    memory_breakdown: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, using peft's count (4-bit weights counted as full elements)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    total = trainable = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def _lora_module_flops(module: Any, name: str = "", seq_len: int = 512) -> int:
    """Forward+backward FLOPs per token of the active LoRA adapters of one peft LoRA layer (LoraCostModel's
    per-module formula)."""
    from strato_peft.cost.model import LoraCostModel
    from strato_peft.strato.sites import ModuleSite

    ranks = [module.r[a] for a in getattr(module, "active_adapters", []) if a in getattr(module, "r", {})]
    if not ranks:
        return 0
    leaf = name.rsplit(".", 1)[-1] or "lora"
    site = ModuleSite(name or leaf, leaf, None, int(module.in_features), int(module.out_features))
    costs = LoraCostModel([site], batch_size=1, seq_len=max(int(seq_len), 1))
    return sum(costs.module(site, int(r)).flops for r in ranks)


def adapter_flops_per_token(model: torch.nn.Module, seq_len: int = 512) -> int:
    """Training FLOPs per token added by the method's trainable parts (see module docstring)."""
    try:
        from peft.tuners.ia3 import IA3Layer
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a hard dependency
        return 0
    flops = 0
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            flops += _lora_module_flops(module, name, seq_len)
        elif isinstance(module, IA3Layer):
            flops += 3 * sum(v.numel() for v in module.ia3_l.values())
    cfg = getattr(model, "peft_config", {}).get("default") if hasattr(model, "peft_config") else None
    if cfg is not None and getattr(cfg, "is_prompt_learning", False):
        base = getattr(model, "base_model", model)
        mcfg = base.config
        n_virtual = cfg.num_virtual_tokens
        layers = getattr(mcfg, "num_hidden_layers", 1)
        hidden = getattr(mcfg, "hidden_size", 0)
        if cfg.peft_type.value == "PREFIX_TUNING":
            # each token attends to n_virtual extra keys/values in every layer: QK^T and AV, fwd + bwd
            flops += 3 * 2 * 2 * n_virtual * hidden * layers
        else:
            # the virtual tokens run through the whole frozen model; spread over the sequence's tokens
            _, total = count_params(model)
            flops += int(4 * total * n_virtual / max(seq_len, 1))
    if not hasattr(model, "peft_config"):
        trainable, _ = count_params(model)
        flops += 2 * trainable  # full fine-tuning: the weight-gradient work a frozen base skips
    return int(flops)


def _bytes_per_weight(p: torch.Tensor) -> float:
    if p.__class__.__name__ == "Params4bit":
        return 0.5 * 1.06  # NF4 plus block constants
    if p.dtype == torch.int8:
        return 1.0
    return p.element_size()


def estimate_training_memory(model: torch.nn.Module, batch_size: int, seq_len: int,
                             gradient_checkpointing: bool = False, mixed_precision: str = "no") -> dict[str, int]:
    """Rough peak training memory in bytes: weights, grads, AdamW state, activations."""
    weights = int(sum(p.numel() * _bytes_per_weight(p) for p in model.parameters()))
    trainable, _ = count_params(model)
    grads = 4 * trainable
    optimizer = 8 * trainable  # AdamW: two fp32 moments
    base = getattr(model, "base_model", model)
    base = getattr(base, "model", base)
    mcfg = getattr(base, "config", None)
    hidden = getattr(mcfg, "hidden_size", 0) or getattr(mcfg, "n_embd", 0) or 0
    layers = getattr(mcfg, "num_hidden_layers", 0) or getattr(mcfg, "n_layer", 0) or 0
    heads = getattr(mcfg, "num_attention_heads", 1) or getattr(mcfg, "n_head", 1) or 1
    act_bytes = 2 if mixed_precision in ("fp16", "bf16") else 4
    tokens = batch_size * seq_len
    if gradient_checkpointing:
        per_layer = tokens * hidden * act_bytes
    else:  # Korthikanti et al. (2022): ~ (34 + 5 a s / h) s b h bytes per layer at 2-byte activations
        per_layer = int(tokens * hidden * (17 + 2.5 * heads * seq_len / max(hidden, 1)) * act_bytes)
    vocab = getattr(mcfg, "vocab_size", 0) or 0
    logits = tokens * vocab * 4 * 2  # fp32 logits and their gradient
    activations = int(per_layer * layers + logits)
    return {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": activations}


def cost_report(model: torch.nn.Module, batch_size: int, seq_len: int, gradient_checkpointing: bool = False,
                mixed_precision: str = "no") -> CostReport:
    """All first-order costs of ``model`` for the given batch shape."""
    trainable, total = count_params(model)
    breakdown = estimate_training_memory(model, batch_size, seq_len, gradient_checkpointing, mixed_precision)
    frozen_base = 4 * total if hasattr(model, "peft_config") else 6 * total
    return CostReport(trainable, total, adapter_flops_per_token(model, seq_len), frozen_base,
                      sum(breakdown.values()), breakdown)


def human_bytes(n: Optional[float]) -> str:
    """'1.23 GiB'-style rendering."""
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.2f} TiB"
