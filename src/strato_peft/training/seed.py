"""Full seed control: python, numpy, torch (and CUDA) from one integer; and a scope whose random draws are undone."""

from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed every RNG a run touches; the Trainer seeds the data order from the same value (data_seed)."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without moving the python, numpy or torch (CPU, CUDA, MPS) random streams: whatever it draws,
    the code after it draws what it would have drawn without it. STRATO's search runs inside one, so that the
    training after it (LoRA's A init, dropout) is the same random draw as a LoRA run of the same seed."""
    py, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    mps = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        if mps is not None:
            torch.mps.set_rng_state(mps)
