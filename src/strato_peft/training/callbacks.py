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


class ProfilerCallback(TrainerCallback):
    """A torch.profiler window of ``active`` steps per epoch (after 1 wait and 1 warm-up step), written as a
    TensorBoard trace under ``trace_dir/epoch<N>`` (open with the PyTorch profiler plugin of TensorBoard)."""

    def __init__(self, trace_dir: Path, active: int = 10) -> None:
        self.trace_dir = trace_dir
        self.active = active
        self.profiler: Any = None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch.profiler as tp

        epoch = int(state.epoch or 0)
        activities = [tp.ProfilerActivity.CPU]
        import torch

        if torch.cuda.is_available():
            activities.append(tp.ProfilerActivity.CUDA)
        self.profiler = tp.profile(
            activities=activities, schedule=tp.schedule(wait=1, warmup=1, active=self.active, repeat=1),
            on_trace_ready=tp.tensorboard_trace_handler(str(self.trace_dir / f"epoch{epoch}")), record_shapes=True)
        self.profiler.start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.profiler is not None:
            self.profiler.step()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._stop()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None
