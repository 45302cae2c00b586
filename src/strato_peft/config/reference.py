"""Render the schema as documentation: configs/base.yaml (every field, its default, its description) and the
README's config reference table. One source of truth: tests check both files are up to date."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from strato_peft.config.schema import StratoConfig

SECTIONS = ("model", "peft", "task", "training", "device_info", "logging")


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value)


def _fields(section: type[BaseModel]):
    for name, field in section.model_fields.items():
        key = field.alias or name
        default = field.default_factory() if field.default_factory is not None else field.default
        yield key, default, field.description or ""


def base_yaml() -> str:
    """configs/base.yaml: every field with its default and description."""
    lines = ["# Every config field with its default. Generated from strato_peft/config/schema.py by",
             "# `python -m strato_peft.config.reference`; a config file only needs the fields it changes.",
             f"seed: {StratoConfig.model_fields['seed'].default}  # {StratoConfig.model_fields['seed'].description}"]
    for section in SECTIONS:
        lines.append(f"{section}:")
        lines += _yaml_block(StratoConfig.model_fields[section].annotation, "  ")
    return "\n".join(lines) + "\n"


def _yaml_block(cls: type[BaseModel], indent: str) -> list[str]:
    lines = []
    for key, default, desc in _fields(cls):
        if isinstance(default, BaseModel):  # a nested section: its own indented block
            lines.append(f"{indent}{key}:  # {desc}")
            lines += _yaml_block(type(default), indent + "  ")
        else:
            lines.append(f"{indent}{key}: {_yaml_value(default)}  # {desc}")
    return lines


def markdown_reference() -> str:
    """The README's config reference: one table per section."""
    out: list[str] = []
    for section in SECTIONS:
        _markdown_table(StratoConfig.model_fields[section].annotation, section, out)
    return "\n".join(out)


def _markdown_table(cls: type[BaseModel], path: str, out: list[str]) -> None:
    out.append(f"**`{path}`** - {cls.__doc__.strip().splitlines()[0]}\n")
    out.append("| field | default | meaning |\n|---|---|---|")
    nested = []
    for key, default, desc in _fields(cls):
        if isinstance(default, BaseModel):
            out.append(f"| `{key}` | see `{path}.{key}` below | {desc.replace('|', '/')} |")
            nested.append((type(default), f"{path}.{key}"))
        else:
            out.append(f"| `{key}` | `{_yaml_value(default)}` | {desc.replace('|', '/')} |")
    out.append("")
    for sub, sub_path in nested:
        _markdown_table(sub, sub_path, out)


README_START = "<!-- config-reference:start -->"
README_END = "<!-- config-reference:end -->"


def readme_with_reference(readme: str) -> str:
    """``readme`` with the text between the config-reference markers replaced by :func:`markdown_reference`."""
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{markdown_reference()}{README_END}{tail}"


if __name__ == "__main__":  # pragma: no cover
    import sys
    from pathlib import Path

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    (root / "configs" / "base.yaml").write_text(base_yaml())
    readme = root / "README.md"
    if readme.is_file() and README_START in readme.read_text():
        readme.write_text(readme_with_reference(readme.read_text()))
    print(f"wrote {root / 'configs' / 'base.yaml'} and the README's config reference")
