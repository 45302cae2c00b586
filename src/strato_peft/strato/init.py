"""Gradient-aligned start for STRATO's LoRA factors: A's rows along the sensitivity map's directions, B = 0.

With B = 0 the first gradient of B is ``scaling * G @ A.T`` (G the weight's loss gradient). peft's random A
projects G onto r random input directions; taking A's rows from G's top right singular vectors V_r instead gives
``scaling * U_r S_r`` (up to A's row norm), so the first update of ``B @ A`` is the best rank-r approximation of
the full fine-tuning step, the quantity the sensitivity map valued when it chose the ranks (the one-step SVD
start of LoRA-One, Zhang et al. 2025, with B left at zero). The module's output is unchanged at the start (B = 0),
the base weights are never modified, and the adapter stays a plain peft LoRA adapter: only the starting point of
training differs. A's row norm is kept at that of peft's kaiming init, so the learning rate means the same.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from strato_peft.strato.layers import lora_layers

INITS = ("gradient", "kaiming")


def gradient_init(model: torch.nn.Module, directions: Mapping[str, torch.Tensor], adapter: str = "default",
                  min_rank: int = 1) -> dict[str, int]:
    """Overwrite the first rows of every LoRA A in ``model`` of rank >= ``min_rank`` with the module's stored
    directions (scaled to the RMS row norm of the A peft drew) and zero B. Returns module name -> rows set
    (modules without stored directions, or below ``min_rank``, keep peft's init)."""
    done: dict[str, int] = {}
    with torch.no_grad():
        for name, layer in lora_layers(model, adapter).items():
            v = directions.get(name)
            if v is None or int(layer.r[adapter]) < min_rank:
                continue
            a = layer.lora_A[adapter].weight
            if v.shape[-1] != a.shape[1]:
                raise ValueError(f"strato init: stored directions of {name} have {v.shape[-1]} inputs, "
                                 f"its LoRA A has {a.shape[1]} (sensitivity map of another model?)")
            k = min(a.shape[0], v.shape[0])
            rho = a.float().pow(2).sum(dim=1).mean().sqrt()
            a[:k] = (rho * v[:k].to(device=a.device, dtype=torch.float32)).to(a.dtype)
            layer.lora_B[adapter].weight.zero_()
            done[name] = k
    return done


def apply_init(model: torch.nn.Module, init: str, directions: Mapping[str, torch.Tensor], min_rank: int = 1
               ) -> dict[str, Any]:
    """Apply ``init`` ('gradient' or 'kaiming': peft's own) to a freshly wrapped STRATO model, the gradient start
    only on modules of rank >= ``min_rank``; a summary for logs."""
    if init not in INITS:
        raise ValueError(f"strato.init: expected one of {INITS}, got {init!r}")
    if init == "kaiming":
        return {"init": "kaiming"}
    done = gradient_init(model, directions, min_rank=min_rank)
    return {"init": "gradient", "min_rank": min_rank, "modules": len(done), "rows": int(sum(done.values())),
            "kaiming_modules": len(lora_layers(model)) - len(done)}
