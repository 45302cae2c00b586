"""Exact match of greedy generations on the held-out split of the run a checkpoint came from.

For any prompt/response SFT task (a BIG-bench task, a local JSONL, ...). Each held-out prompt is formatted exactly
as training formatted it (the chat template and system prompt when training used them, else ``prompt + "\\n"``),
the model generates greedily, and the output (stripped) is compared with the reference response.
``exact_match`` compares the strings as they are (BIG-bench's exact_str_match); ``exact_match_normalized``
lower-cases and drops punctuation, articles and extra spaces first (SQuAD's normalization), for comparison with
papers that normalize. The generation budget comes from the training responses (longest + 8 tokens), never from
the held-out references.
"""

from __future__ import annotations

import re
import string
import time
from typing import Any

from strato_peft.data.sft import sft_record, uses_chat_template
from strato_peft.eval.base import EvalOptions, EvalTask, TaskResult, register_task
from strato_peft.eval.generation import GenerationConfig, generate
from strato_peft.eval.target import EvalInputError, EvalTarget, heldout_rows

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def render_prompt(tokenizer: Any, row: dict[str, Any], chat: bool, system_prompt: str | None) -> str:
    """The prompt of ``row`` as the model saw it in training, ready for generation."""
    record = sft_record(row, chat, system_prompt)
    if chat:
        return tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    return record["prompt"]


def generation_budget(tokenizer: Any, responses: list[str]) -> int:
    """Longest training response in tokens plus a margin of 8 (the model must stop on its own)."""
    longest = max((len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses), default=24)
    return longest + 8


def run_exact_match(target: EvalTarget, options: EvalOptions) -> TaskResult:
    """Greedy generation on the run's held-out prompts, scored by exact match with the reference responses."""
    start = time.perf_counter()
    cfg, data, rows = heldout_rows(target, options.limit, "exact_match", "causal_lm", "causal-LM SFT")
    if not rows or "prompt" not in rows[0]:
        raise EvalInputError(f"--tasks exact_match: task {cfg.task.name!r} has no prompt/response rows to score "
                             "(plain-text tasks have no reference answer; use --tasks perplexity)")
    tok = target.tokenizer
    chat = uses_chat_template(tok, cfg.task)
    prompts = [render_prompt(tok, r, chat, cfg.task.system_prompt) for r in rows]
    budget = options.max_new_tokens or generation_budget(tok, [str(r["response"]) for r in data.train])
    outputs = generate(target.model, tok, prompts, GenerationConfig(max_new_tokens=budget),
                       batch_size=options.batch_size, seed=options.seed, add_special_tokens=not chat)
    strict, loose, samples = 0, 0, []
    for r, out in zip(rows, outputs):
        pred, ref = out[0].strip(), str(r["response"]).strip()
        hit, hit_norm = pred == ref, normalize_answer(pred) == normalize_answer(ref)
        strict, loose = strict + hit, loose + hit_norm
        if options.log_samples:
            samples.append({"prompt": r["prompt"], "target": ref, "prediction": pred, "correct": hit,
                            "correct_normalized": hit_norm})
    fmt = "chat template, user turn = prompt" if chat else "prompt + newline"
    return TaskResult({"exact_match": strict / len(rows), "exact_match_normalized": loose / len(rows)}, len(rows),
                      f"{fmt}; greedy; output stripped", details={
                          "split": data.info, "max_new_tokens": budget, "seconds": time.perf_counter() - start},
                      samples=samples)


register_task(EvalTask("exact_match", "greedy generation on a SFT run's held-out split, exact match with the reference",
                       run_exact_match))
