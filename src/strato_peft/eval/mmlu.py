"""MMLU, scored as lm-evaluation-harness scores it: the log-likelihood of each answer letter after the prompt.

Prompt (k-shot): "The following are multiple choice questions (with answers) about {subject}.\\n\\n" then k solved
examples and the question, each "{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:" (solved ones followed by
" {letter}\\n\\n"); the prediction is the letter among " A".." D" with the highest log-likelihood. The packaged
MMLU has no dev split, so, as lm-eval takes the first k dev examples of a subject, the shots are a fixed set per
subject: the first k questions of a seeded order of that subject's questions, skipping the question asked (so those
k questions take the (k+1)-th instead of themselves). Every other question of the subject shares one prompt prefix
(header + k solved examples), whose KV cache is computed once (``prefix_loglikelihood``).
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from typing import Any

from strato_peft.data.sources import MMLU_LETTERS, format_mmlu_question, load_mmlu_rows
from strato_peft.eval.base import EvalOptions, EvalTask, TaskResult, register_task
from strato_peft.eval.scoring import prefix_loglikelihood
from strato_peft.eval.target import EvalTarget

CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": ("abstract algebra", "anatomy", "astronomy", "college biology", "college chemistry",
             "college computer science", "college mathematics", "college physics", "computer security",
             "conceptual physics", "electrical engineering", "elementary mathematics", "high school biology",
             "high school chemistry", "high school computer science", "high school mathematics",
             "high school physics", "high school statistics", "machine learning"),
    "humanities": ("formal logic", "high school european history", "high school us history",
                   "high school world history", "international law", "jurisprudence", "logical fallacies",
                   "moral disputes", "moral scenarios", "philosophy", "prehistory", "professional law",
                   "world religions"),
    "social_sciences": ("econometrics", "high school geography", "high school government and politics",
                        "high school macroeconomics", "high school microeconomics", "high school psychology",
                        "human sexuality", "professional psychology", "public relations", "security studies",
                        "sociology", "us foreign policy"),
    "other": ("business ethics", "clinical knowledge", "college medicine", "global facts", "human aging",
              "management", "marketing", "medical genetics", "miscellaneous", "nutrition",
              "professional accounting", "professional medicine", "virology"),
}
CATEGORY_OF = {subject: cat for cat, subjects in CATEGORIES.items() for subject in subjects}
PROMPT_FORMAT = ("lm-eval-harness MMLU: 'The following are multiple choice questions (with answers) about "
                 "{subject}.' + k x '{question}\\nA. ..\\nD. ..\\nAnswer: {letter}' + question; loglik of ' A'..' D'; "
                 "shots: a fixed k per subject (first k of a seeded order of its questions, never the one asked)")


def prompt_parts(row: dict[str, Any], shots: list[dict[str, Any]]) -> tuple[str, str]:
    """The k-shot prompt for ``row`` split into (header + solved shots, question), the cut placed before the blank
    line that ends the shared part so that the tokens of the first part are a prefix of those of the whole prompt."""
    head = f"The following are multiple choice questions (with answers) about {row['topic']}.\n\n"
    solved = "".join(f"{format_mmlu_question(s)} {s['correct_answer']}\n\n" for s in shots)
    return (head + solved)[:-2], "\n\n" + format_mmlu_question(row)


def build_prompt(row: dict[str, Any], shots: list[dict[str, Any]]) -> str:
    """The k-shot prompt for ``row`` (shots are solved examples of the same subject)."""
    return "".join(prompt_parts(row, shots))


def select_rows(rows: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """All rows, or ``limit`` of them spread over subjects (a seeded sample, stable across runs)."""
    if limit is None or limit >= len(rows):
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def shot_order(all_rows: list[dict[str, Any]], same_subject: list[int], seed: int) -> list[int]:
    """The indices of one subject's questions in the seeded order shots are taken from (seeded by subject name)."""
    order = list(same_subject)
    random.Random(f"{seed}:{all_rows[order[0]]['topic']}").shuffle(order)
    return order


def pick_shots(all_rows: list[dict[str, Any]], order: list[int], asked: int, k: int) -> list[dict[str, Any]]:
    """The first k questions of the subject's ``shot_order`` other than the asked one: the same k for every question
    of the subject except those k, which each take the (k+1)-th in place of themselves."""
    return [all_rows[j] for j in order[:k + 1] if j != asked][:k]


def max_shots() -> int:
    """The most shots every subject can supply (its question count minus the one asked)."""
    counts: dict[str, int] = defaultdict(int)
    for r in load_mmlu_rows():
        counts[r["topic"]] += 1
    return min(counts.values()) - 1


def run_mmlu(target: EvalTarget, options: EvalOptions) -> TaskResult:
    """Accuracy overall, per subject and per category."""
    start = time.perf_counter()
    all_rows = load_mmlu_rows()
    k = 5 if options.shots is None else options.shots
    by_subject: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(all_rows):
        by_subject[r["topic"]].append(i)
    orders = {subject: shot_order(all_rows, members, options.seed) for subject, members in by_subject.items()}
    index = {id(r): i for i, r in enumerate(all_rows)}
    rows = select_rows(all_rows, options.limit, options.seed)
    parts = [prompt_parts(r, pick_shots(all_rows, orders[r["topic"]], index[id(r)], k)) for r in rows]
    requests = [(shared, own, f" {L}") for shared, own in parts for L in MMLU_LETTERS]
    scores = prefix_loglikelihood(target.model, target.tokenizer, requests, batch_size=options.batch_size)

    correct_by: dict[str, list[int]] = defaultdict(list)
    samples = []
    hits = []
    for qi, r in enumerate(rows):
        lls = [scores[qi * 4 + c].logprob for c in range(4)]
        pred = MMLU_LETTERS[max(range(4), key=lambda c: lls[c])]
        ok = int(pred == r["correct_answer"])
        hits.append(ok)
        correct_by[r["topic"]].append(ok)
        if options.log_samples:
            samples.append({"subject": r["topic"], "question": r["question"], "target": r["correct_answer"],
                            "prediction": pred, "loglik": lls, "correct": bool(ok)})
    per_subject = {s: sum(v) / len(v) for s, v in sorted(correct_by.items())}
    per_category = {}
    for cat in CATEGORIES:
        vals = [x for s, v in correct_by.items() if CATEGORY_OF.get(s) == cat for x in v]
        if vals:
            per_category[cat] = {"accuracy": sum(vals) / len(vals), "n": len(vals)}
    metrics = {"accuracy": sum(hits) / len(hits), "per_category": per_category, "per_subject": per_subject}
    return TaskResult(metrics, len(rows), PROMPT_FORMAT,
                      details={"shots": k, "seconds": time.perf_counter() - start,
                               "subjects": len(per_subject)}, samples=samples)


register_task(EvalTask("mmlu", "MMLU (57 subjects), answer-letter log-likelihood", run_mmlu, default_shots=5,
                       max_shots=max_shots))
