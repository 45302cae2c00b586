"""The modules an allocation is over: every linear layer peft can adapt, with its shape and block index."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from strato_peft.models.loading import OUTPUT_HEAD_NAMES, output_head


@dataclass(frozen=True)
class ModuleSite:
    """One adaptable module: its full name in the base model, leaf name (kind), block index and shape."""

    name: str           # full module name, e.g. "model.layers.3.self_attn.q_proj"
    kind: str           # leaf name, e.g. "q_proj"
    layer: Optional[int]  # transformer block index (first integer in the name), None outside the blocks
    d_in: int
    d_out: int
    conv1d: bool = False  # GPT-2 style Conv1D (weight stored transposed)

    @property
    def numel(self) -> int:
        return self.d_in * self.d_out

    def rank_limit(self, max_rank: Optional[int] = None) -> int:
        """The largest rank a LoRA on this module can use: min(d_in, d_out), and ``max_rank`` when one is given."""
        limit = min(self.d_in, self.d_out)
        return limit if max_rank is None else min(limit, max_rank)


_LAYER = re.compile(r"\.(\d+)\.")


def _shape(module: torch.nn.Module) -> tuple[int, int, bool]:
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out), True
    return int(module.in_features), int(module.out_features), False


def _matches(name: str, kind: str, targets: Union[None, str, Sequence[str]]) -> bool:
    if targets is None or targets == "all-linear":
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) or kind == t for t in targets)


def adaptable_sites(model: torch.nn.Module, targets: Union[None, str, Sequence[str]] = None) -> list[ModuleSite]:
    """Linear/Conv1D modules of ``model`` outside output heads (peft's 'all-linear' set), optionally restricted to
    ``targets`` (suffixes, full names or a regex), in module order. Works on a base model or a peft-wrapped one
    (names are reported as in the base model)."""
    from transformers.pytorch_utils import Conv1D

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = output_head(base)
    sites = []
    for name, module in base.named_modules():
        inner = getattr(module, "base_layer", module)  # a peft-wrapped layer carries the name, its base_layer the shape
        if not name or inner is head or not isinstance(inner, (torch.nn.Linear, Conv1D)):
            continue
        parts = name.split(".")
        if parts[-1] == "base_layer" or any(p in OUTPUT_HEAD_NAMES or p.startswith("lora_") or p == "modules_to_save"
                                            for p in parts):
            continue
        if not _matches(name, parts[-1], targets):
            continue
        d_in, d_out, conv = _shape(inner)
        m = _LAYER.search("." + name + ".")
        sites.append(ModuleSite(name, parts[-1], int(m.group(1)) if m else None, d_in, d_out, conv))
    return sites
