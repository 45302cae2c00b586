"""An allocation: which modules get a LoRA adapter and of what rank (modules absent from it get none)."""

from __future__ import annotations

from typing import Iterable, Mapping

from strato_peft.strato.sites import ModuleSite

Allocation = dict[str, int]  # full module name -> rank >= 1


def uniform_allocation(sites: Iterable[ModuleSite], rank: int) -> Allocation:
    """LoRA's choice: the same rank on every site."""
    return {s.name: rank for s in sites}


def clean(allocation: Mapping[str, int]) -> Allocation:
    """Drop zero ranks (peft refuses r = 0: a module with no rank gets no adapter) and check the rest."""
    out = {}
    for name, r in allocation.items():
        if int(r) != r or r < 0:
            raise ValueError(f"allocation: rank of {name!r} must be a non-negative integer, got {r!r}")
        if r:
            out[name] = int(r)
    return out


def total_rank(allocation: Mapping[str, int]) -> int:
    return int(sum(allocation.values()))
