"""Typed config sections: dataclass fields with a type, a help line, and optional choices or bounds.

Every section of the configuration is a dataclass built with `field_(...)`; `coerce` turns a TOML or
`--set` value into the field's type and raises `ConfigError` with one line naming the key, the value and
what is allowed.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from .errors import ConfigError


def field_(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
           max: float | None = None, input_file: bool = False) -> Any:
    """A config field: its default, a one-line help, and optional allowed values or numeric bounds.
    `input_file`: the value names a file (relative to the repository root) whose contents are an input of the
    stage reading this section, so they enter its cache key."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "input_file": input_file}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(p) for p in parts) + " (or empty)"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _coerce_scalar(tp: Any, value: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.replace("_", ""))
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise ValueError
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError
    raise ValueError


def coerce(tp: Any, value: Any) -> Any:
    """Convert `value` to type `tp` (str/int/float/bool, list[...], Optional[...]) or raise ValueError."""
    origin = get_origin(tp)
    if origin is list:
        (inner,) = get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return [coerce(inner, v) for v in value]
    if origin is not None and type(None) in get_args(tp):
        if value is None or value == "" or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        inner = [a for a in get_args(tp) if a is not type(None)][0]
        return coerce(inner, value)
    return _coerce_scalar(tp, value)


def check_field(section: str, cls: type, name: str, value: Any) -> Any:
    """Coerce and bound-check one field; raise ConfigError naming key, value and what is allowed."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    key = f"{section}.{name}"
    if name not in fields:
        allowed = ", ".join(sorted(fields))
        raise ConfigError(f"unknown config key '{key}' (value {value!r}); keys of [{section}] are: {allowed}")
    f = fields[name]
    tp = typing.get_type_hints(cls)[name]
    meta = f.metadata
    try:
        out = coerce(tp, value)
    except (ValueError, TypeError):
        raise ConfigError(f"bad value for '{key}': {value!r} is not {_type_name(tp)} — {meta.get('help', '')}") from None
    choices = meta.get("choices")
    items = out if isinstance(out, list) else [out]
    if choices:
        for item in items:
            if item is not None and item not in choices:
                raise ConfigError(f"bad value for '{key}': {item!r}; allowed: {', '.join(map(str, choices))}")
    lo, hi = meta.get("min"), meta.get("max")
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if lo is not None and item < lo:
                raise ConfigError(f"bad value for '{key}': {item!r} is below the minimum {lo} — {meta.get('help', '')}")
            if hi is not None and item > hi:
                raise ConfigError(f"bad value for '{key}': {item!r} is above the maximum {hi} — {meta.get('help', '')}")
    return out


def build_section(section: str, cls: type, values: dict[str, Any]) -> Any:
    """Build a section dataclass from a dict of raw values, validating every key."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section [{section}] must be a table, got {values!r}")
    kwargs = {name: check_field(section, cls, name, v) for name, v in values.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()  # cross-field checks; raises ConfigError
    return obj


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field: used by README docs and `--help`."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows


def input_files(section: Any, root: Path) -> list[Path]:
    """The existing files named by the `input_file` fields of a section (relative paths against `root`)."""
    out = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.metadata.get("input_file") and value:
            path = Path(value) if Path(value).is_absolute() else Path(root) / value
            if path.is_file():
                out.append(path)
    return out
