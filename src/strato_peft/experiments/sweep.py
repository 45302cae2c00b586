"""`strato run`: every config (one file, or every YAML in a folder) x every seed, skipping finished runs.

A run whose results already exist and are complete is skipped; an unfinished one (its staging folder holds
checkpoints) is resumed; a run that fails is reported and the sweep goes on with the next. Each run carries an
experiment tag ``model/task/phase/lambda<X>_rank<Y>_seed<Z>`` (the original framework's form).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from strato_peft.config import load_config
from strato_peft.config.schema import StratoConfig
from strato_peft.errors import ConfigError, StratoError
from strato_peft.outputs import RunDirectory, model_label, run_dir_for, slug, task_label

if TYPE_CHECKING:  # pragma: no cover
    from strato_peft.training.run import TrainOptions

DEFAULT_SEEDS = (42, 43, 44)


@dataclass
class SweepItem:
    """One (config, seed) of a sweep and what became of it."""

    config: Path
    seed: int
    tag: str = ""
    run_dir: Optional[Path] = None
    status: str = "pending"  # done | skipped | resumed | failed
    detail: str = ""


@dataclass
class SweepResult:
    """Every item of a sweep, in order."""

    items: list[SweepItem] = field(default_factory=list)

    @property
    def failed(self) -> list[SweepItem]:
        return [i for i in self.items if i.status == "failed"]


def experiment_tag(cfg: StratoConfig, phase: str) -> str:
    """model/task/phase/lambda<X>_rank<Y>_seed<Z>; X is the params weight of peft.lambda (0 without one)."""
    lam = (cfg.peft.lambda_ or {}).get("params", 0)
    return f"{model_label(cfg)}/{task_label(cfg)}/{slug(phase)}/lambda{lam:g}_rank{cfg.peft.rank}_seed{cfg.seed}"


def config_files(config: Optional[str], config_dir: Optional[str]) -> list[Path]:
    """The config file, or every *.yaml / *.yml in the folder (sorted)."""
    if bool(config) == bool(config_dir):
        raise ConfigError("strato run: give exactly one of --config FILE or --config-dir DIR")
    if config:
        return [Path(config)]
    folder = Path(config_dir)  # type: ignore[arg-type]
    if not folder.is_dir():
        raise ConfigError(f"--config-dir: {folder} is not a folder")
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        raise ConfigError(f"--config-dir: {folder} holds no .yaml config")
    return files


def run_sweep(files: Sequence[Path], seeds: Sequence[int], options: "TrainOptions", overrides: Sequence[str] = (),
              phase: str = "main", echo=print) -> SweepResult:
    """Train every config x seed; never aborts on one run's failure (it is recorded and reported)."""
    from strato_peft.training.run import train

    result = SweepResult()
    for path in files:
        for seed in seeds:
            item = SweepItem(path, seed)
            result.items.append(item)
            try:
                cfg = load_config(path, overrides, seed)
                item.tag = experiment_tag(cfg, phase)
                run = RunDirectory(run_dir_for(cfg, options.output_dir))
                item.run_dir = run.final
                if run.is_complete() and not options.overwrite:
                    item.status, item.detail = "skipped", "results exist and are complete"
                    echo(f"[skip] {item.tag}: {run.final} is complete")
                    continue
                resume = run.latest_checkpoint() is not None and not options.overwrite
                echo(f"[run]  {item.tag}" + (" (resuming)" if resume else ""))
                train(cfg, replace(options, resume=resume, experiment_tag=item.tag))
                item.status = "resumed" if resume else "done"
            except StratoError as exc:
                item.status, item.detail = "failed", str(exc)
                echo(f"[fail] {item.tag or path}: {exc}")
            except Exception as exc:  # noqa: BLE001 - one crashed run must not stop the sweep
                item.status, item.detail = "failed", f"{type(exc).__name__}: {exc}"
                echo(f"[fail] {item.tag or path}: crashed\n{traceback.format_exc(limit=3)}")
    return result

