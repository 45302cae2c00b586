"""From an allocation to peft: the LoRA config STRATO trains with, and the plain peft adapter it hands out.

Training uses rsLoRA scaling (alpha / sqrt(r)) so that a rank change by the scheduler does not change the update's
scale. The exported adapter must compute the same outputs in any peft-compatible server, including those that apply
one global ``lora_alpha / r`` and ignore ``rank_pattern``/``alpha_pattern`` (vLLM): each module's scale is folded
into its B matrix, rsLoRA is switched off and ``alpha_pattern`` sets alpha = r on every module (and the global
``lora_alpha`` = ``r``), so alpha/r = 1 everywhere. ``target_modules`` lists the chosen modules by full name and
every ``rank_pattern``/``alpha_pattern`` key is checked to select exactly one module the way peft matches them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from strato_peft.strato.allocation import Allocation, clean
from strato_peft.strato.layers import lora_layers


def training_lora_config(allocation: Mapping[str, int], alpha: float, dropout: float, task_type: str,
                         modules_to_save: Optional[Sequence[str]] = None, bias: str = "none"):
    """rsLoRA config with one entry per chosen module (full names) and its rank in ``rank_pattern``."""
    from peft import LoraConfig

    alloc = clean(allocation)
    if not alloc:
        raise ValueError("strato: the allocation gives no module a rank")
    top = max(alloc.values())
    return LoraConfig(r=top, lora_alpha=alpha, lora_dropout=dropout, use_rslora=True, bias=bias,
                      target_modules=sorted(alloc), rank_pattern=dict(alloc), task_type=task_type,
                      modules_to_save=list(modules_to_save) if modules_to_save else None)


def check_patterns(model: torch.nn.Module, patterns: Mapping[str, Any], adapter: str = "default") -> None:
    """Every pattern key must be picked by exactly one LoRA module, namely the one it names (peft applies keys that
    match nothing, or match several modules, silently)."""
    from peft.utils.other import get_pattern_key

    keys = list(patterns)
    picked: dict[str, list[str]] = {k: [] for k in keys}
    for name in lora_layers(model, adapter):
        key = get_pattern_key(keys, name)
        if key in picked:
            picked[key].append(name)
    bad = {k: v for k, v in picked.items() if v != [k]}
    if bad:
        k, v = next(iter(bad.items()))
        raise ValueError(f"strato export: pattern key {k!r} selects {v or 'no module'} (expected exactly [{k!r}])")


def fold_scaling(model: torch.nn.Module, adapter: str = "default") -> Allocation:
    """Multiply each LoRA B by its layer's scaling and set the scaling to 1 (outputs unchanged); returns the ranks."""
    ranks = {}
    with torch.no_grad():
        for name, layer in lora_layers(model, adapter).items():
            layer.lora_B[adapter].weight.mul_(float(layer.scaling[adapter]))
            layer.scaling[adapter] = 1.0
            ranks[name] = int(layer.r[adapter])
    return ranks


def export_plain_adapter(model: torch.nn.Module, out_dir: Path, adapter: str = "default") -> dict[str, Any]:
    """Rewrite ``model`` (a trained STRATO peft model) in place into the plain form above and save it to ``out_dir``.
    Returns the exported config fields for strato_plan.json."""
    ranks = fold_scaling(model, adapter)
    cfg = model.peft_config[adapter]
    top = max(ranks.values())
    cfg.r = top
    cfg.lora_alpha = top
    cfg.use_rslora = False
    cfg.target_modules = set(ranks)
    cfg.rank_pattern = dict(ranks)
    cfg.alpha_pattern = {n: float(r) for n, r in ranks.items()}
    check_patterns(model, cfg.rank_pattern, adapter)
    check_patterns(model, cfg.alpha_pattern, adapter)
    model.save_pretrained(out_dir)
    return {"r": top, "lora_alpha": top, "use_rslora": False, "target_modules": sorted(ranks),
            "rank_pattern": dict(ranks), "alpha_pattern": cfg.alpha_pattern}
