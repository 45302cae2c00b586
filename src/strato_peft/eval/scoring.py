"""Log-likelihood of continuations given contexts, batched, the way lm-evaluation-harness computes it.

The continuation's tokens are those of ``tok(context + continuation)`` beyond ``tok(context)`` (so a leading space
merges as it would in running text). Requests sharing a context whose continuations are single tokens are scored
with one forward pass (MMLU's four answer letters), others with one pass each; batches are sorted by length and
left-padded with position ids that skip the padding, and only the scored positions are projected onto the
vocabulary.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch


@dataclass
class LoglikResult:
    """Sum of the continuation's token log-probabilities, and whether greedy decoding would produce it."""

    logprob: float
    is_greedy: bool


def split_tokens(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) with the continuation taken from the joint encoding."""
    whole = tokenizer(context + continuation, add_special_tokens=True)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    if whole[: len(ctx)] != ctx:  # the join changed the context's last token: fall back to separate encodings
        return ctx, tokenizer(continuation, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]


def _accepts(model: Any, name: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


def _forward_batches(model: Any, sequences: list[list[int]], keep: list[int], batch_size: int, pad_id: int,
                     max_length: int, consume: Callable[[int, torch.Tensor], None]) -> None:
    """Run ``sequences`` through the model in length-sorted, left-padded batches; ``consume(i, logprobs)`` receives
    the log-softmax of each sequence's last ``keep[i]`` positions (sequences cut from the left to ``max_length``).

    Left padding puts every sequence's last token at the end, so only the positions scored are projected onto the
    vocabulary (``logits_to_keep``); position ids count real tokens only, so padding changes nothing.
    """
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    device = next(model.parameters()).device
    with_positions = _accepts(model, "position_ids")
    with_keep = _accepts(model, "logits_to_keep")
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(order), batch_size), desc="scoring", unit="batch",
                      disable=len(order) <= batch_size):
        idx = order[start:start + batch_size]
        seqs = [sequences[i][-max_length:] for i in idx]
        width = max(len(s) for s in seqs)
        k = max(keep[i] for i in idx)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s):] = torch.tensor(s)
            mask[row, width - len(s):] = 1
        kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if with_positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
        if with_keep:
            kwargs["logits_to_keep"] = k
        with torch.no_grad():
            logits = model(**kwargs).logits[:, -k:].float()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        for row, i in enumerate(idx):
            consume(i, logprobs[row, k - keep[i]:])


def loglikelihood(model: Any, tokenizer: Any, requests: Sequence[tuple[str, str]], batch_size: int = 8,
                  max_length: Optional[int] = None) -> list[LoglikResult]:
    """Log-likelihood of each (context, continuation) request, in request order."""
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048) or 2048
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [split_tokens(tokenizer, c, x) for c, x in requests]
    results: list[Optional[LoglikResult]] = [None] * len(requests)

    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    singles: list[int] = []
    for i, (ctx, cont) in enumerate(encoded):
        if not cont:
            raise ValueError(f"request {i}: the continuation {requests[i][1]!r} encodes to no tokens")
        (groups[tuple(ctx)] if len(cont) == 1 else singles).append(i)
    # one forward per distinct context for single-token continuations
    contexts = list(groups)

    def consume_group(j: int, lp: torch.Tensor) -> None:
        last = lp[-1]
        top = int(last.argmax())
        for i in groups[contexts[j]]:
            tok = encoded[i][1][0]
            results[i] = LoglikResult(float(last[tok]), top == tok)

    _forward_batches(model, [list(c) for c in contexts], [1] * len(contexts), batch_size, pad_id, max_length,
                     consume_group)

    def consume_single(j: int, lp: torch.Tensor) -> None:
        # lp holds the positions that predict the continuation: ctx[-1], cont[0], ..., cont[-2]
        cont = encoded[singles[j]][1]
        positions = lp
        target = torch.tensor(cont)
        i = singles[j]
        results[i] = LoglikResult(float(positions.gather(1, target[:, None]).sum()),
                                  bool((positions.argmax(-1) == target).all()))

    # feed context + continuation minus its last token: the last len(cont) positions predict the continuation
    seqs = [encoded[i][0] + encoded[i][1][:-1] for i in singles]
    _forward_batches(model, seqs, [len(encoded[i][1]) for i in singles], batch_size, pad_id, max_length,
                     consume_single)
    return results  # type: ignore[return-value]  # every request is filled by one of the two passes
