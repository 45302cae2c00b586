"""Where the project keeps converted models and other caches (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$STRATO_CACHE, or ~/.cache/strato-peft."""
    root = os.environ.get("STRATO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "strato-peft")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
