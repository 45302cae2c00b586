"""What an evaluation task is: a name and a function from (target, options) to metrics with their sample size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from strato_peft.eval.target import EvalTarget
from strato_peft.registry import Registry


@dataclass
class EvalOptions:
    """Options shared by every task (from the CLI); a task ignores what does not apply to it."""

    limit: Optional[int] = None
    shots: Optional[int] = None
    batch_size: int = 8
    log_samples: bool = False
    seed: int = 0
    num_samples: int = 1          # HumanEval: completions per problem
    temperature: float = 0.0      # HumanEval/GSM8K: 0 = greedy
    max_new_tokens: Optional[int] = None
    reference: bool = False       # HumanEval: score the canonical solutions instead of the model
    heldout_only: bool = True     # GSM8K: score the held-out split when the adapter was trained on the rest


@dataclass
class TaskResult:
    """Metrics of one task, how many examples they rest on, the prompt format, and optional per-sample records."""

    metrics: dict[str, Any]
    n: int
    prompt_format: str
    details: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class EvalTask:
    """A registered evaluation task."""

    name: str
    description: str
    run: Callable[[EvalTarget, EvalOptions], TaskResult]
    default_shots: int = 0
    max_shots: Optional[Callable[[], int]] = None


def _input_error(message: str) -> Exception:
    from strato_peft.eval.target import EvalInputError

    return EvalInputError(message)


_TASKS: Registry[EvalTask] = Registry("task", "--tasks", _input_error)


def register_task(task: EvalTask) -> EvalTask:
    """Add an evaluation task under its name (one line per task module)."""
    return _TASKS.register(task.name, task)


def get_task(name: str) -> EvalTask:
    """The task called ``name``; unknown names are a one-line error listing the known ones."""
    return _TASKS.get(name)


def available_tasks() -> list[str]:
    """Names of all registered evaluation tasks."""
    return _TASKS.names()
