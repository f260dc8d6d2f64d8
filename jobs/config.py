"""A job's typed config from its defaults, a preset and ``--set key=value`` overrides."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any


def field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_cls)}


def coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type, or a ValueError that names the field and the type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(name, value, arg)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{name}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce(name, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected an integer, got {value!r}") from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if hint is str:
        return str(value)
    return value


def build_config(config_cls: type, presets: dict[str, dict], preset: str | None, overrides: dict[str, Any]) -> Any:
    """Defaults < preset < overrides. Unknown fields and ill-typed values raise ValueError."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls!r}: a job's Config must be a dataclass")
    types_ = field_types(config_cls)
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r}; this job has: {', '.join(presets) or 'none'}")
        values.update(presets[preset])
    values.update(overrides)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(unknown)}; fields: {', '.join(types_)}")
    return config_cls(**{k: coerce(k, v, types_[k]) for k, v in values.items()})


def config_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
