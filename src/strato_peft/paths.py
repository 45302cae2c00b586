"""Where the project keeps converted models and other caches (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$STRATO_CACHE, or ~/.cache/strato-peft."""
    root = os.environ.get("STRATO_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "strato-peft"
