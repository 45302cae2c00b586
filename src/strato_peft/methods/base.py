"""What a fine-tuning method is: a name, a builder of its peft config, and optional training callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftConfig
    from transformers import PreTrainedModel, TrainerCallback

    from strato_peft.config.schema import PeftConfigSection

TaskType = Literal["causal_lm", "classification"]


@dataclass
class MethodContext:
    """Everything a method needs to build its peft config."""

    peft: "PeftConfigSection"
    task_type: TaskType
    model: "PreTrainedModel"
    total_steps: int = 1
    dry_run: bool = False  # model on the meta device: no weight-dependent initialisation


@dataclass(frozen=True)
class MethodSpec:
    """A registered fine-tuning method.

    ``build`` returns the peft config to apply, or None for full fine-tuning. ``callbacks`` returns Trainer
    callbacks the method needs during training (AdaLoRA's budget allocation, for example).
    """

    name: str
    description: str
    build: Callable[[MethodContext], Optional["PeftConfig"]]
    callbacks: Callable[[Any], list["TrainerCallback"]] = field(default=lambda model: [])
    quantization: Optional[Literal["4bit", "8bit"]] = None
    uses_rank: bool = True


def peft_task_type(task_type: TaskType) -> str:
    """Map our task type onto peft's TaskType value."""
    from peft import TaskType as PeftTaskType

    return PeftTaskType.CAUSAL_LM if task_type == "causal_lm" else PeftTaskType.SEQ_CLS
