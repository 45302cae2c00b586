"""Evaluation: benchmarks (MMLU, GSM8K, HumanEval), classification metrics, held-out exact match, perplexity,
and a code sandbox.

Importing this package registers every task (one line per task module, like the methods registry).
"""

from strato_peft.eval.base import EvalOptions, EvalTask, TaskResult, available_tasks, get_task, register_task

from strato_peft.eval import mmlu  # noqa: E402,F401
from strato_peft.eval import gsm8k  # noqa: E402,F401
from strato_peft.eval import humaneval  # noqa: E402,F401
from strato_peft.eval import classification  # noqa: E402,F401
from strato_peft.eval import perplexity  # noqa: E402,F401
from strato_peft.eval import exact_match  # noqa: E402,F401

__all__ = ["EvalOptions", "EvalTask", "TaskResult", "available_tasks", "get_task", "register_task"]
