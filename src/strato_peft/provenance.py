"""Where a result came from: library versions, git commit, peak memory."""

from __future__ import annotations

import importlib.metadata
import platform as _platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import torch

LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "safetensors", "bitsandbytes",
             "strato-peft")


def library_versions() -> dict[str, Optional[str]]:
    """Installed versions of the libraries a run depends on (None where absent)."""
    out: dict[str, Optional[str]] = {"python": sys.version.split()[0], "platform": _platform.platform()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> Optional[str]:
    """The commit of the checkout this package runs from, with '+dirty' when it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


_RUNS_STARTED = 0


def start_memory_window() -> int:
    """Call when a run starts: resets the GPU's peak counter, so the device peak is this run's alone, and returns
    how many runs this process started before (the CPU's peak RSS cannot be reset: it is this run's own only in a
    process's first run)."""
    global _RUNS_STARTED
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    _RUNS_STARTED += 1
    return _RUNS_STARTED - 1


def peak_memory(runs_before_in_process: Optional[int] = None) -> dict[str, Any]:
    """Peak resident memory of this process and, on GPUs, peak allocated device memory, in bytes; with
    ``runs_before_in_process`` (from start_memory_window) it also says whose peaks these are."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    cuda = int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
    out: dict[str, Any] = {"cpu_max_rss_bytes": int(rss), "device_peak_allocated_bytes": cuda}
    if runs_before_in_process is not None:
        out.update(device_peak_scope="this run" if cuda is not None else None,
                   runs_before_in_process=runs_before_in_process)
    return out
