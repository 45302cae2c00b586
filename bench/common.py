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
        "config": {k: v for k, v in vars(args).items() if k != "out"},
    }


def write_report(out: str | Path, result: dict[str, Any], title: str, body: str) -> None:
    """``<out>.json`` with every figure and ``<out>.md`` with the title, command, machine and ``body``."""
    from strato_peft.outputs import atomic_write_json, atomic_write_text

    out = Path(out)
    atomic_write_json(out.with_suffix(".json"), result)
    atomic_write_text(out.with_suffix(".md"), f"# {title}\n\nCommand: `{result['command']}`  \n"
                                              f"Machine: {result['machine']}\n\n{body}")


def flat_keys(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"dotted.key": value} (configs compared key by key)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out
