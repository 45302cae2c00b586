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
class RunInputs:
    """What a data-driven method (STRATO's search) needs beyond the model: the run's config, data, tokenizer and
    platform, and whether this is a --fast-dev-run."""

    cfg: Any          # StratoConfig
    data: Any         # TaskData
    tokenizer: Any
    platform: Any     # PlatformInfo
    fast_dev_run: bool = False


@dataclass
class MethodContext:
    """Everything a method needs to build its peft config, and what it hands back to the training run."""

    peft: "PeftConfigSection"
    task_type: TaskType
    model: "PreTrainedModel"
    total_steps: int = 1
    dry_run: bool = False  # model on the meta device: no weight-dependent initialisation
    run: Optional[RunInputs] = None  # set for real training runs
    callbacks: list = field(default_factory=list)       # extra Trainer callbacks the build decided on
    artifacts: dict = field(default_factory=dict)       # method-specific results for metrics.json
    state: dict = field(default_factory=dict)           # method-private objects kept from build to save


@dataclass(frozen=True)
class MethodSpec:
    """A registered fine-tuning method.

    ``build`` returns the peft config to apply, or None for full fine-tuning. ``callbacks`` returns Trainer
    callbacks the method needs during training (AdaLoRA's budget allocation, for example). ``save`` replaces the
    default ``save_pretrained`` of the trained model (STRATO exports its plain adapter and plan). ``initialize``
    sets adapter weights after peft wrapped the model (STRATO's gradient-aligned start); dry runs skip it.
    """

    name: str
    description: str
    build: Callable[[MethodContext], Optional["PeftConfig"]]
    callbacks: Callable[[Any], list["TrainerCallback"]] = field(default=lambda model: [])
    quantization: Optional[Literal["4bit", "8bit"]] = None
    uses_rank: bool = True
    save: Optional[Callable[[Any, Any, MethodContext], None]] = None  # (model, target folder, context)
    initialize: Optional[Callable[[Any, MethodContext], None]] = None  # (wrapped model, context): weight init


def peft_task_type(task_type: TaskType) -> str:
    """Map our task type onto peft's TaskType value."""
    from peft import TaskType as PeftTaskType

    return PeftTaskType.CAUSAL_LM if task_type == "causal_lm" else PeftTaskType.SEQ_CLS
