"""Log-likelihood of continuations given contexts, batched, the way lm-evaluation-harness computes it.

The continuation's tokens are those of ``tok(context + continuation)`` beyond ``tok(context)`` (so a leading space
merges as it would in running text). Requests sharing a context whose continuations are single tokens are scored
with one forward pass (MMLU's four answer letters), others with one pass each; batches are sorted by length and
left-padded with position ids that skip the padding, and only the scored positions are projected onto the
vocabulary. ``prefix_loglikelihood`` scores contexts that share a prefix (MMLU's k-shot header and solved examples)
from one KV cache of that prefix, with the same result as ``loglikelihood``.
"""

from __future__ import annotations

import copy
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


def _prompt_learning(model: Any) -> bool:
    """Whether a peft model injects virtual tokens or key/value prefixes, which a reused KV cache would not see."""
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


def prefix_loglikelihood(model: Any, tokenizer: Any, requests: Sequence[tuple[str, str, str]], batch_size: int = 8,
                         max_length: Optional[int] = None) -> list[LoglikResult]:
    """Log-likelihood of each (prefix, suffix, continuation) request, equal to ``loglikelihood`` of
    (prefix + suffix, continuation), in request order.

    Each prefix shared by two or more distinct suffixes is run once and its KV cache reused: the suffixes are
    right-padded into batches after a copy of the cache (attention mask over prefix + suffix, positions continuing
    after the prefix), and the token of each suffix's last position is scored. A request goes the plain way instead
    when ``tok(prefix)`` is not the start of ``tok(prefix + suffix)`` (the boundary merges tokens), when its
    continuation is more than one token, when the context exceeds ``max_length``, or when the model cannot take a
    cache (prompt-learning adapters, no ``past_key_values``).
    """
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048) or 2048
    results: list[Optional[LoglikResult]] = [None] * len(requests)
    groups: dict[str, dict[tuple[int, ...], list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    plain: list[int] = list(range(len(requests)))
    prefix_ids: dict[str, list[int]] = {}
    if not _prompt_learning(model) and _accepts(model, "past_key_values"):
        plain = []
        prefix_ids = {p: tokenizer(p, add_special_tokens=True)["input_ids"] for p in {r[0] for r in requests}}
        for i, (prefix, suffix, continuation) in enumerate(requests):
            ctx, cont = split_tokens(tokenizer, prefix + suffix, continuation)
            head = prefix_ids[prefix]
            if len(cont) == 1 and 0 < len(head) < len(ctx) <= max_length and ctx[:len(head)] == head:
                groups[prefix][tuple(ctx[len(head):])].append((i, cont[0]))
            else:
                plain.append(i)
        for prefix in [p for p, by_suffix in groups.items() if len(by_suffix) < 2]:  # nothing to share
            plain.extend(i for hits in groups.pop(prefix).values() for i, _ in hits)
    if plain:
        scored = loglikelihood(model, tokenizer, [(requests[i][0] + requests[i][1], requests[i][2]) for i in plain],
                               batch_size=batch_size, max_length=max_length)
        for i, res in zip(plain, scored):
            results[i] = res
    if groups:
        _score_after_prefixes(model, tokenizer, {p: (prefix_ids[p], g) for p, g in groups.items()}, batch_size,
                              results)
    return results  # type: ignore[return-value]  # every request is filled by one of the two paths


def _score_after_prefixes(model: Any, tokenizer: Any,
                          groups: dict[str, tuple[list[int], dict[tuple[int, ...], list[tuple[int, int]]]]],
                          batch_size: int, results: list[Optional[LoglikResult]]) -> None:
    """Fill ``results[i]`` for every (i, continuation token) of every suffix of every prefix in ``groups``."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with_keep = _accepts(model, "logits_to_keep")
    total = sum(-(-len(by_suffix) // batch_size) for _, by_suffix in groups.values())
    bar = tqdm(total=total, desc="scoring (shared prefix)", unit="batch", disable=total <= 1)
    for head, by_suffix in groups.values():
        with torch.no_grad():
            prefix_cache = model(input_ids=torch.tensor([head], device=device), use_cache=True,
                                 **({"logits_to_keep": 1} if with_keep else {})).past_key_values
        suffixes = sorted(by_suffix, key=len, reverse=True)
        for start in range(0, len(suffixes), batch_size):
            batch = suffixes[start:start + batch_size]
            width = max(len(s) for s in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), len(head) + width), dtype=torch.long)
            mask[:, :len(head)] = 1
            for row, s in enumerate(batch):
                ids[row, :len(s)] = torch.tensor(s)
                mask[row, len(head):len(head) + len(s)] = 1
            cache = copy.deepcopy(prefix_cache)  # forward appends to the cache it is given
            cache.batch_repeat_interleave(len(batch))
            ends = sorted({len(s) - 1 for s in batch})
            kwargs: dict[str, Any] = {
                "input_ids": ids.to(device), "attention_mask": mask.to(device), "past_key_values": cache,
                "position_ids": torch.arange(len(head), len(head) + width, device=device).expand(len(batch), -1),
                "use_cache": True}
            if with_keep:
                kwargs["logits_to_keep"] = torch.tensor(ends, device=device)
            with torch.no_grad():
                logits = model(**kwargs).logits
            for row, s in enumerate(batch):
                last = torch.log_softmax(logits[row, ends.index(len(s) - 1) if with_keep else len(s) - 1].float(),
                                         dim=-1).cpu()
                top = int(last.argmax())
                for i, tok in by_suffix[s]:
                    results[i] = LoglikResult(float(last[tok]), top == tok)
            del cache, logits
            bar.update(1)
    bar.close()
