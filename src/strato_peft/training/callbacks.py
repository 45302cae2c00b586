"""Trainer callbacks the framework adds: TensorBoard into the run folder and the run's own bookkeeping."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def tensorboard_callback(log_dir: Path) -> TrainerCallback:
    """transformers' TensorBoard callback writing into ``log_dir`` (kept with the results)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    log_dir.mkdir(parents=True, exist_ok=True)
    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


class WallClockCallback(TrainerCallback):
    """Measures the wall time of the training loop of this process (resumed runs add their earlier time)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds = time.perf_counter() - self.start
