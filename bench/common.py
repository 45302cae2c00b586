"""What every benchmark records beside its figures (command, machine, settings) and how it writes them."""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch


def provenance(args: argparse.Namespace) -> dict[str, Any]:
    """The command line, the machine and the settings of a benchmark run."""
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),  # quoted: copy-pastes into a shell
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(),
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"},
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "overwrite")},
    }


REPORT_SUFFIXES = (".json", ".md")


def report_file(out: str | Path, suffix: str) -> Path:
    """``<out><suffix>``: the suffix is appended, so a dotted name (``run_b0.5``) keeps its dots (Path.with_suffix
    would give ``run_b0.json``); an ``out`` already ending in a report suffix has it replaced."""
    out = Path(out)
    if out.suffix in (*REPORT_SUFFIXES, ".png"):
        out = out.with_suffix("")
    return out.with_name(out.name + suffix)


def add_output_args(parser: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--out`` (the report's path without suffix) and ``--overwrite`` (replace a report already there)."""
    parser.add_argument("--out", default=default, help=help)
    parser.add_argument("--overwrite", action="store_true", help="replace the report at --out if there is one "
                        "(without it an existing report is an error, checked before any work)")


def existing_report(out: str | Path, extra: tuple[str, ...] = ()) -> list[Path]:
    """The files of a report at ``out`` (``.json``, ``.md`` and any ``extra`` suffixes) that exist."""
    return [p for p in (report_file(out, s) for s in (*REPORT_SUFFIXES, *extra)) if p.exists()]


def refuse_existing_report(parser: argparse.ArgumentParser, out: str | Path, overwrite: bool,
                           extra: tuple[str, ...] = ()) -> None:
    """Stop with an error naming the files, before any work, when a report is at ``out`` and overwrite is off: an
    earlier benchmark's figures are never replaced silently."""
    found = existing_report(out, extra)
    if found and not overwrite:
        parser.error(f"--out: a report is already there ({', '.join(map(str, found))}); pass --overwrite to "
                     "replace it or choose another --out")


def write_report(out: str | Path, result: dict[str, Any], title: str, body: str, overwrite: bool = False) -> None:
    """``<out>.json`` with every figure and ``<out>.md`` with the title, command, machine and ``body``; an existing
    report there is replaced only with ``overwrite`` (FileExistsError otherwise)."""
    from strato_peft.outputs import atomic_write_json, atomic_write_text

    out = Path(out)
    found = existing_report(out)
    if found and not overwrite:
        raise FileExistsError(f"a report is already at {', '.join(map(str, found))}; pass overwrite to replace it")
    atomic_write_json(report_file(out, ".json"), result)
    atomic_write_text(report_file(out, ".md"), f"# {title}\n\nCommand: `{result['command']}`  \n"
                                              f"Machine: {result['machine']}\n\n{body}")


def flat_keys(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"dotted.key": value} (configs compared key by key)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out
