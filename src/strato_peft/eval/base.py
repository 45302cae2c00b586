"""What an evaluation task is: a name and a function from (target, options) to metrics with their sample size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from strato_peft.eval.target import EvalTarget


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


_TASKS: dict[str, EvalTask] = {}


def register_task(task: EvalTask) -> EvalTask:
    """Add an evaluation task under its name (one line per task module)."""
    if task.name in _TASKS:
        raise RuntimeError(f"eval task {task.name!r} registered twice")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> EvalTask:
    """The task called ``name``; unknown names are a one-line error listing the known ones."""
    from strato_peft.eval.target import EvalInputError

    if name not in _TASKS:
        raise EvalInputError(f"--tasks: unknown task {name!r}; expected one of: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def available_tasks() -> list[str]:
    """Names of all registered evaluation tasks."""
    return sorted(_TASKS)
