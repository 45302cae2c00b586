"""Run directories and atomic result writing.

A run is built in a hidden staging folder ``.<name>.partial`` beside its final place and renamed into
``results/<model>/<task>/<name>/`` only when complete, so a results folder is never half-written. Checkpoints for
``--resume`` live in the staging folder. An existing complete run is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from strato_peft.config.schema import StratoConfig
from strato_peft.errors import OutputExistsError

COMPLETE_MARKER = "metrics.json"


def slug(text: str) -> str:
    """A file-system-safe name: 'meta-llama/Llama-2-7b-hf' -> 'meta-llama--Llama-2-7b-hf'."""
    text = text.strip().rstrip("/").replace("/", "--").replace(":", "-")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text) or "unnamed"


def default_run_name(cfg: StratoConfig) -> str:
    """<method>_r<rank>_seed<seed> (rank omitted for methods without one; STRATO: strato_<solver>_b<budget>)."""
    from strato_peft.methods import get_method

    spec = get_method(cfg.peft.method)
    if spec.name == "strato":
        budget = cfg.peft.budget if cfg.peft.budget is not None else "abs" if cfg.peft.strato.budget_absolute else 0.5
        return f"strato_{cfg.peft.solver or 'knapsack'}_b{budget}_seed{cfg.seed}"
    rank = f"_r{cfg.peft.rank}" if spec.uses_rank else ""
    return f"{cfg.peft.method}{rank}_seed{cfg.seed}"


def model_label(cfg: StratoConfig) -> str:
    """The model's name in result paths: model.name, or the folder name when only model.path was given."""
    named = "name" in cfg.model.model_fields_set or not cfg.model.path
    return slug(cfg.model.name if named else Path(cfg.model.path).name)  # type: ignore[arg-type]


def task_label(cfg: StratoConfig) -> str:
    """The task's name in result paths: task.name, or the data file's stem for local files."""
    local = cfg.task.name in ("jsonl", "json", "csv") and cfg.task.data_path
    return slug(Path(cfg.task.data_path).stem if local else cfg.task.name)  # type: ignore[arg-type]


def run_dir_for(cfg: StratoConfig, output_dir: Optional[str] = None) -> Path:
    """results/<model>/<task>/<run_name> for this config."""
    root = Path(output_dir or cfg.logging.output_dir)
    return root / model_label(cfg) / task_label(cfg) / slug(cfg.logging.run_name or default_run_name(cfg))


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds, removed when it
    fails (never a half-written file), for writers that take a file name (safetensors' save_file, for example)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never a half-written file)."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: Path, data: Any) -> None:
    """JSON version of :func:`atomic_write_text` (sorted keys, indented)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_config(path: Path, cfg: StratoConfig) -> None:
    """Write the fully resolved config as YAML."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))


class RunDirectory:
    """The final and staging folders of one run, and the rules for creating, resuming and replacing them."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.staging = final.parent / f".{final.name}.partial"

    @property
    def checkpoints(self) -> Path:
        return self.staging / "checkpoints"

    def is_complete(self) -> bool:
        return (self.final / COMPLETE_MARKER).is_file()

    def latest_checkpoint(self) -> Optional[Path]:
        """The newest Trainer checkpoint in the staging folder, if any."""
        if not self.checkpoints.is_dir():
            return None
        cands = [p for p in self.checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
                 and (p / "trainer_state.json").is_file()]
        return max(cands, key=lambda p: int(p.name.split("-")[-1]), default=None)

    def check(self, overwrite: bool, resume: bool) -> None:
        """Raise before anything is written if the run would clobber an existing result."""
        if self.final.exists() and not overwrite:
            what = "a complete run" if self.is_complete() else "files"
            raise OutputExistsError(f"output directory {self.final} already holds {what}; pass --overwrite to "
                                    "replace it or choose another --output-dir / logging.run_name")
        if self.staging.exists() and not (resume or overwrite):
            raise OutputExistsError(f"output directory {self.staging} holds an unfinished run; pass --resume to "
                                    "continue it or --overwrite to start over")

    def prepare(self, overwrite: bool, resume: bool) -> Optional[Path]:
        """Create the staging folder; returns the checkpoint to resume from (None starts fresh)."""
        self.check(overwrite, resume)
        ckpt = self.latest_checkpoint() if resume else None
        if self.staging.exists() and not resume:
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        return ckpt

    def finalize(self, keep_checkpoints: bool = False) -> Path:
        """Move the finished staging folder into place (replacing an earlier run only when it was allowed)."""
        if not keep_checkpoints and self.checkpoints.exists():
            shutil.rmtree(self.checkpoints)
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.replaced-{int(time.time())}"
            os.replace(self.final, old)
        os.replace(self.staging, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final
