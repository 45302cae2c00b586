"""Reproducible train/held-out splits: a seeded permutation, so the same seed gives the same split."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any, Optional

from strato_peft.config.schema import TaskConfig
from strato_peft.errors import DataError


def split_rows(rows: list[dict[str, Any]], task: TaskConfig, run_seed: int, default_eval_size: Optional[int] = None
               ) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Shuffle with ``task.split_seed`` (or the run seed), hold out ``eval_size`` rows, cap train at ``train_size``.

    Returns (train, held_out, info) where info records the sizes, the seed and a fingerprint of the held-out set.
    With ``task.validation_size`` the second list is instead that many validation rows from the end of the training
    pool: the held-out rows are not touched, and the training rows stay the same whenever the pool has room for both
    (``info['scored_on']`` says which split the run is scored on).
    """
    seed = run_seed if task.split_seed is None else task.split_seed
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = task.eval_size or default_eval_size or max(1, int(round(task.eval_fraction * len(rows))))
    if n_eval >= len(rows):
        raise DataError(f"task.eval_size: {n_eval} held-out rows leave nothing to train on ({len(rows)} rows in all)")
    pool = order[n_eval:]
    scored = order[:n_eval]
    if task.validation_size:
        if task.validation_size >= len(pool):
            raise DataError(f"task.validation_size: {task.validation_size} validation rows leave nothing to train "
                            f"on ({len(pool)} rows outside the held-out split)")
        scored = pool[-task.validation_size:]
        pool = pool[: -task.validation_size]
    held = [rows[i] for i in scored]
    train = [rows[i] for i in pool]
    if task.train_size:
        train = train[: task.train_size]
    digest = hashlib.sha256(json.dumps(sorted(scored)).encode()).hexdigest()[:16]
    info = {"split_seed": seed, "n_total": len(rows), "n_train": len(train), "n_eval": len(held),
            "scored_on": "validation" if task.validation_size else "held-out", "heldout_fingerprint": digest}
    return train, held, info
