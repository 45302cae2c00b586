"""GSM8K: batched greedy generation, answer extraction, exact match.

Models with a chat template get the question as a user message (optionally after k solved examples as earlier
turns); others get lm-evaluation-harness's "Question: ...\\nAnswer:" format with k solved examples before it.
The answer is the number after "####" when the model writes one, else the last number in its output; it is
compared numerically with the reference after "####". When the evaluated adapter was trained on the packaged
GSM8K's train split, only the held-out rows of that split are scored (``n`` says how many).
"""

from __future__ import annotations

import random
import re
import time
from typing import Any, Optional

from strato_peft.config.schema import TaskConfig
from strato_peft.data.sources import load_source
from strato_peft.data import load_task_data
from strato_peft.eval.base import EvalOptions, EvalTask, TaskResult, register_task
from strato_peft.eval.generation import GenerationConfig, generate
from strato_peft.eval.target import EvalTarget

_NUMBER = re.compile(r"-?[$]?\d[\d,]*(?:\.\d+)?")
STOP_PLAIN = ["Question:", "</s>", "<|im_end|>", "\n\n\n"]


def normalize_number(text: str) -> Optional[str]:
    """'$1,234.50' -> '1234.5'; None when ``text`` holds no number."""
    m = _NUMBER.search(text)
    if not m:
        return None
    raw = m.group(0).replace("$", "").replace(",", "").rstrip(".")
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


def extract_answer(output: str) -> Optional[str]:
    """The model's final answer: after '####' if present, else the last number in the output."""
    if "####" in output:
        found = normalize_number(output.split("####", 1)[1])
        if found is not None:
            return found
    numbers = _NUMBER.findall(output)
    return normalize_number(numbers[-1]) if numbers else None


def reference_answer(answer: str) -> str:
    """The number after '####' in a GSM8K reference solution."""
    ref = normalize_number(answer.split("####")[-1])
    assert ref is not None, answer
    return ref


def _rows_to_score(target: EvalTarget) -> tuple[list[dict], list[dict], str]:
    """(rows to score, rows usable as few-shot examples, which split)."""
    cfg = target.run_config
    if cfg is not None and cfg.task.name.lower() == "gsm8k":
        data = load_task_data(cfg.task, cfg.seed)  # the same split training used
        return data.eval, data.train, f"held-out split of the adapter's training run ({data.info['n_eval']} rows, " \
                                      f"split_seed {data.info['split_seed']})"
    task = TaskConfig(name="gsm8k")
    rows = load_source(task).rows
    return rows, rows, "full packaged GSM8K test set (1,319 rows)"


def build_prompt(tokenizer: Any, question: str, shots: list[dict], chat: bool) -> str:
    """The prompt for one question (chat-template or plain format)."""
    if chat:
        messages = []
        for s in shots:
            messages += [{"role": "user", "content": s["prompt"]}, {"role": "assistant", "content": s["response"]}]
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    solved = "".join(f"Question: {s['prompt']}\nAnswer: {s['response']}\n\n" for s in shots)
    return f"{solved}Question: {question}\nAnswer:"


def run_gsm8k(target: EvalTarget, options: EvalOptions) -> TaskResult:
    """Exact-match accuracy of the extracted final answer."""
    start = time.perf_counter()
    rows, pool, split = _rows_to_score(target)
    if options.limit:
        rows = rows[: options.limit]
    k = options.shots or 0
    chat = bool(getattr(target.tokenizer, "chat_template", None))
    prompts = []
    for i, r in enumerate(rows):
        candidates = [p for p in pool if p["prompt"] != r["prompt"]]
        shots = random.Random(f"{options.seed}:{i}").sample(candidates, k) if k else []
        prompts.append(build_prompt(target.tokenizer, r["prompt"], shots, chat))
    gen = GenerationConfig(max_new_tokens=options.max_new_tokens or 256, temperature=options.temperature,
                           stop=[] if chat else STOP_PLAIN)
    outputs = generate(target.model, target.tokenizer, prompts, gen, batch_size=options.batch_size,
                       seed=options.seed, add_special_tokens=not chat)
    hits, samples = [], []
    for r, prompt, out in zip(rows, prompts, outputs):
        pred, ref = extract_answer(out[0]), reference_answer(r["response"])
        hits.append(int(pred == ref))
        if options.log_samples:
            samples.append({"question": r["prompt"], "target": ref, "prediction": pred, "output": out[0],
                            "correct": pred == ref})
    fmt = "chat template, user turn = question" if chat else "lm-eval-harness 'Question: ...\\nAnswer:'"
    return TaskResult({"exact_match": sum(hits) / len(hits)}, len(rows), f"{fmt}; {k}-shot; greedy"
                      if options.temperature == 0 else f"{fmt}; {k}-shot; T={options.temperature}",
                      details={"split": split, "shots": k, "seconds": time.perf_counter() - start,
                               "max_new_tokens": gen.max_new_tokens}, samples=samples)


register_task(EvalTask("gsm8k", "GSM8K grade-school math, exact match of the final number", run_gsm8k,
                       max_shots=lambda: 1000))
