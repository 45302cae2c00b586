"""Reading a results file of this benchmark (``bench/results/strato_*.json``) back: its tasks, with their numbers.

``--earlier-results`` and ``--merge-results`` both read such files; a file that is not JSON or holds no tasks is an
error naming the flag and the file, and JSON's string keys become the seeds and budgets they were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _number(key: str) -> Any:
    """A JSON object key back to the int or float it was (seeds, budgets), else the key itself."""
    for kind in (int, float):
        try:
            return kind(key)
        except ValueError:
            pass
    return key


def restore_keys(obj: Any) -> Any:
    """JSON turns int and float dict keys (seeds, budgets) into strings; the report's code expects numbers."""
    if isinstance(obj, dict):
        return {_number(k) if isinstance(k, str) else k: restore_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore_keys(v) for v in obj]
    return obj


def read(path: Path, flag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole file and its tasks (task -> summary, keys restored); ``flag`` names the option in errors."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{flag} {path}: cannot read it as JSON ({exc})") from None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise SystemExit(f"{flag} {path}: no 'tasks' in it (expected a results file of this benchmark, "
                         "e.g. bench/results/strato_vs_baselines.json)")
    return data, {task: restore_keys(summary) for task, summary in tasks.items()}
