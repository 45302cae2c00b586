"""Batched generation with left padding and the KV cache, with post-hoc stop strings.

Prompts are sorted by length so each batch pads little; generation stops early when every sequence of a batch
has produced a stop string or the end-of-sequence token, and outputs are cut at the first stop string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch


@dataclass
class GenerationConfig:
    """How to decode: greedy (temperature 0) or sampled, how long, where to stop."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    num_return_sequences: int = 1


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut]


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], config: GenerationConfig, batch_size: int = 8,
             seed: int = 0, add_special_tokens: bool = True) -> list[list[str]]:
    """For each prompt, ``config.num_return_sequences`` completions (prompt excluded), in prompt order.

    ``add_special_tokens=False`` for prompts rendered by a chat template, which already carry them.
    """
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[Optional[list[str]]] = [None] * len(prompts)
    sample = config.temperature > 0
    gen_kwargs: dict[str, Any] = dict(max_new_tokens=config.max_new_tokens, do_sample=sample, pad_token_id=pad_id,
                                      num_return_sequences=config.num_return_sequences, use_cache=True)
    if sample:
        gen_kwargs.update(temperature=config.temperature, top_p=config.top_p)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if config.stop:
        gen_kwargs.update(stop_strings=list(config.stop), tokenizer=tokenizer)
    torch.manual_seed(seed)
    from tqdm.auto import tqdm

    try:
        for start in tqdm(range(0, len(order), batch_size), desc="generating", unit="batch",
                          disable=len(order) <= batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens)
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                seqs = model.generate(**enc, **gen_kwargs)
            new = seqs[:, enc["input_ids"].shape[1]:]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            n = config.num_return_sequences
            for row, i in enumerate(idx):
                out[i] = [truncate_at_stop(t, config.stop) for t in texts[row * n:(row + 1) * n]]
    finally:
        tokenizer.padding_side = old_side
    return out  # type: ignore[return-value]
