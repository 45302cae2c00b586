"""Shared fixtures: tiny models and data sets on disk, and a config factory pointing at them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from tiny import make_model_dir, write_cls_csv, write_sft_jsonl  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Point $STRATO_CACHE at a session folder, so that the sensitivity maps tests build never land in the user's
    cache; the converted packaged models and the BIG-bench files stay shared (linked), converted once."""
    from strato_peft.paths import cache_dir

    real, private = cache_dir(), tmp_path_factory.mktemp("strato_cache")
    (real / "models").mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir():
        if entry.name != "sensitivity":
            (private / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STRATO_CACHE", str(private))
        yield private


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    for kind in ("llama", "gpt2", "bert"):
        make_model_dir(root, kind)
    write_sft_jsonl(root / "sft.jsonl")
    write_cls_csv(root / "cls.csv")
    return root


@pytest.fixture
def make_config(tiny_root, tmp_path):
    """Build a validated StratoConfig for a tiny model ('llama', 'gpt2', 'bert') and a task type."""
    from strato_peft.config import validate_config

    def factory(kind: str = "llama", method: str = "lora", task_type: str = "causal_lm", **sections: Any):
        if task_type == "classification":
            task_cfg = {"name": "csv", "data_path": str(tiny_root / "cls.csv"), "type": "classification",
                        "columns": {"text": "sentence", "label": "sentiment"}, "max_length": 32, "eval_size": 8}
        else:
            task_cfg = {"name": "jsonl", "data_path": str(tiny_root / "sft.jsonl"),
                        "columns": {"prompt": "question", "response": "answer"}, "max_length": 64, "eval_size": 8}
        data: dict[str, Any] = {
            "seed": 42,
            "model": {"name": f"tiny-{kind}", "path": str(tiny_root / kind)},
            "peft": {"method": method, "rank": 4, "alpha": 8, "num_virtual_tokens": 4},
            "task": task_cfg,
            "training": {"batch_size": 4, "learning_rate": 1e-3, "max_steps": 3, "logging_steps": 1,
                         "save_steps": 2},
            "logging": {"output_dir": str(tmp_path / "results"), "tensorboard": False},
        }
        for key, value in sections.items():
            data.setdefault(key, {}).update(value)
        return validate_config(data)

    return factory


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny matmuls gain nothing from more, and on a busy 2-core machine two threads
    spin-wait each other (tiny steps ran ~20x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
