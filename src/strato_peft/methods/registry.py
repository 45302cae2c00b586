"""The method registry: each method module registers itself with one ``register(...)`` line."""

from __future__ import annotations

from strato_peft.errors import ConfigError
from strato_peft.methods.base import MethodSpec

_METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method under ``spec.name``; names are unique."""
    if spec.name in _METHODS:
        raise RuntimeError(f"method {spec.name!r} registered twice")
    _METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """The method registered as ``name`` (a ConfigError lists the known ones otherwise)."""
    key = name.lower().replace("-", "_")
    if key not in _METHODS:
        raise ConfigError(f"peft.method: unknown method {name!r}; expected one of: {', '.join(sorted(_METHODS))}")
    return _METHODS[key]


def available_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_METHODS)
