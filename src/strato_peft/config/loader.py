"""Read a YAML config, apply ``--override key.path=value`` items and validate it into a StratoConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from pydantic import ValidationError

from strato_peft.config.schema import StratoConfig
from strato_peft.errors import ConfigError


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"YAML syntax error in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, peft, task, ...), got {type(data).__name__}")
    return data


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--override {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` items; values are parsed as YAML scalars (``8`` -> int, ``[q,v]`` -> list)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--override {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--override {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        _set_path(data, key.strip(), value)
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line naming the first invalid field and what was expected."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key {loc!r}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{shown}{more}"


def validate_config(data: dict[str, Any], source: str = "config") -> StratoConfig:
    """Validate a raw dict into a StratoConfig, raising ConfigError with one clear line."""
    try:
        return StratoConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(
    path: Optional[str | Path] = None,
    overrides: Iterable[str] = (),
    seed: Optional[int] = None,
) -> StratoConfig:
    """Load ``path`` (or the embedded default job when None), apply overrides and the seed, validate."""
    if path is None:
        path = default_config_path()
    path = Path(path)
    data = _read_yaml(path)
    data = apply_overrides(data, overrides)
    if seed is not None:
        data["seed"] = seed
    cfg = validate_config(data, source=str(path))
    if cfg.peft.config_file:
        cfile = Path(cfg.peft.config_file)
        if not cfile.is_absolute() and not cfile.exists() and (path.parent / cfile).exists():
            cfg.peft.config_file = str(path.parent / cfile)
    return cfg


def default_config_path() -> Path:
    """The embedded default job: a short LoRA SFT of SmolLM2-135M on packaged GSM8K rows."""
    return Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
