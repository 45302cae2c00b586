"""One report from several results files of this benchmark, a task each: nothing re-run, nothing recomputed.

Each task's held-out runs may have gone to their own folder and report (tweets in ``strato_vs_baselines``, addition
in ``strato_addition_tuned_heldout``), and the run folders are lost with a machine, so ``--summarize-only`` cannot
rebuild a report of both. ``--merge-results`` takes each task's finished summary as its file holds it (every statistic
and verdict as computed when it was written) and records where each came from and that file's own command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import results_file


def load(paths: list[Path], tasks: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Task -> summary, and task -> its source (file, command, machine, and the sources it was merged from), for
    every task of ``tasks`` found in ``paths``; a task in two files, or in none, is an error naming the files."""
    summaries: dict[str, dict[str, Any]] = {}
    sources: dict[str, dict[str, Any]] = {}
    for path in paths:
        data, found = results_file.read(path, "--merge-results")
        for task, summary in found.items():
            if task not in tasks:
                continue
            if task in summaries:
                raise SystemExit(f"--merge-results: task {task} is in {sources[task]['file']} and in {path}; give "
                                 "each task from one file")
            summaries[task] = summary
            earlier = (data.get("sources") or {}).get(task)  # a merged file: keep where the task first came from
            sources[task] = earlier or {"file": str(path), "command": data.get("command"),
                                        "machine": data.get("machine")}
    missing = [t for t in tasks if t not in summaries]
    if missing:
        raise SystemExit(f"--merge-results: no file given holds task(s) {', '.join(missing)} "
                         f"(files: {', '.join(map(str, paths))}); pass --task with the tasks they hold")
    return summaries, sources


def sources_markdown(sources: dict[str, dict[str, Any]]) -> str:
    """Where each task's summary came from, with that file's own command, for the report's head."""
    lines = ["Merged from per-task results files (`--merge-results`; each task's figures as its file holds them):", ""]
    for task, src in sources.items():
        lines.append(f"- **{task}**: `{src['file']}`, made by `{src.get('command')}`")
    return "\n".join(lines) + "\n"
