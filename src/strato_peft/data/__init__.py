"""Data: sources (packaged, local, hub), reproducible splits, SFT and classification formatting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from strato_peft.config.schema import TaskConfig
from strato_peft.data.sources import SourceData, load_source
from strato_peft.data.splits import split_rows


@dataclass
class TaskData:
    """Train and held-out rows for one run, in canonical columns."""

    task_type: Literal["causal_lm", "classification"]
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    label_names: Optional[list[str]]
    info: dict[str, Any] = field(default_factory=dict)


def load_task_data(task: TaskConfig, run_seed: int) -> TaskData:
    """Load the configured source and split it reproducibly."""
    src: SourceData = load_source(task)
    train, held, info = split_rows(src.rows, task, run_seed, src.default_eval_size)
    info = {"source": src.description, **info}
    return TaskData(task.type or src.natural_type, train, held, src.label_names, info)


__all__ = ["TaskData", "load_task_data", "load_source", "split_rows"]
