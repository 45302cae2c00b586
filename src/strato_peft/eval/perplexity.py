"""Perplexity on a held-out text set: the run's held-out rows (prompt + response, formatted as in training), or
the packaged GSM8K held-out rows for a base model; token-level, exp(mean NLL over every predicted token)."""

from __future__ import annotations

import math
import time

import torch

from strato_peft.config.schema import TaskConfig
from strato_peft.data import load_task_data
from strato_peft.data.sft import sft_record, uses_chat_template
from strato_peft.eval.base import EvalOptions, EvalTask, TaskResult, register_task
from strato_peft.eval.target import EvalTarget


def held_out_texts(target: EvalTarget) -> tuple[list[str], str]:
    """The held-out texts and a description of where they come from."""
    cfg = target.run_config
    task = cfg.task if cfg is not None and target.task_type == "causal_lm" else TaskConfig(name="gsm8k")
    data = load_task_data(task, cfg.seed if cfg else 0)
    tok = target.tokenizer
    chat = uses_chat_template(tok, task)
    texts = []
    for row in data.eval:
        rec = sft_record(row, chat, task.system_prompt)
        if "text" in rec:
            texts.append(rec["text"])
        elif chat:
            texts.append(tok.apply_chat_template(rec["prompt"] + rec["completion"], tokenize=False))
        else:
            texts.append(rec["prompt"] + rec["completion"])
    return texts, f"{task.name} held-out split ({len(texts)} rows, split_seed {data.info['split_seed']})"


def run_perplexity(target: EvalTarget, options: EvalOptions) -> TaskResult:
    """Sum of token NLLs over the texts (each cut into max-length windows), divided by the token count."""
    start = time.perf_counter()
    texts, source = held_out_texts(target)
    texts = texts[: options.limit] if options.limit else texts
    model, tok = target.model, target.tokenizer
    device = next(model.parameters()).device
    window = min(getattr(model.config, "max_position_embeddings", 2048) or 2048, 2048)
    nll, count = 0.0, 0
    for text in texts:
        ids = tok(text, add_special_tokens=not uses_chat_template(tok, TaskConfig()))["input_ids"]
        for s in range(0, max(len(ids) - 1, 1), window):
            chunk = torch.tensor([ids[s:s + window]], device=device)
            if chunk.shape[1] < 2:
                continue
            with torch.no_grad():
                loss = model(input_ids=chunk, labels=chunk).loss
            n = chunk.shape[1] - 1
            nll += float(loss) * n
            count += n
    return TaskResult({"perplexity": math.exp(nll / count), "nll_per_token": nll / count, "tokens": count},
                      len(texts), "full text (chat template where the tokenizer has one), token-level",
                      details={"source": source, "seconds": time.perf_counter() - start})


register_task(EvalTask("perplexity", "token-level perplexity on a held-out text set", run_perplexity))
