"""Declared configuration fields, generically: an option's valid interval, and strict
conversion between nested frozen dataclasses and JSON dicts (unknown keys and wrong types
raise ValueError naming where). :mod:`pixdiff.config` declares pixdiff's options with these.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import field, fields
from typing import Literal, get_args, get_origin, get_type_hints


def valid_in(interval: str, default):
    """A field whose value (each value, for a tuple) must lie in ``interval``, written as in
    maths: "[0, 1)", "(0, inf)"; checked by :func:`check_intervals`."""
    return field(default=default, metadata={"interval": interval})


def check_intervals(section, name: str) -> None:
    """ValueError naming ``name.field`` and its interval for a value outside it (or not finite)."""
    for f in fields(section):
        interval, value = f.metadata.get("interval"), getattr(section, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if interval and not all(_inside(v, interval) for v in values):
            raise ValueError(f"{name}.{f.name} must be {describe(interval)}, got {value!r}")


def _inside(value: float, interval: str) -> bool:
    lo, hi = (float(x) for x in interval[1:-1].split(","))
    above = value > lo if interval[0] == "(" else value >= lo
    below = value < hi if interval[-1] == ")" else value <= hi
    return math.isfinite(value) and above and below


def describe(interval: str) -> str:
    """'[1, inf)' -> '>= 1', '(0, inf)' -> '> 0', '[0, 1)' -> 'in [0, 1)'."""
    lo, hi = interval[1:-1].split(", ")
    if (lo, hi) == ("-inf", "inf"):
        return "a finite number"
    if hi == "inf":
        return f"{'>' if interval[0] == '(' else '>='} {lo}"
    return f"in {interval}"


def _coerce(value, tp, where: str):
    """Check/convert a JSON value to the annotated type, raising ValueError naming ``where``."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is Literal:
        if value not in get_args(tp):
            raise ValueError(f"{where} must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(get_args(tp)):
            raise ValueError(
                f"{where} must be a list of {len(get_args(tp))} numbers, got {value!r}"
            )
        return tuple(_coerce(v, a, where) for v, a in zip(value, get_args(tp), strict=True))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool, dict):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ValueError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls, d: dict, where: str = "config"):
    """Build dataclass ``cls`` from a dict; unknown keys and wrong types raise ValueError."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping, got {d!r}")
    hints = get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid: {valid}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in d.items()})


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def parse_override(text: str) -> tuple[list[str], object]:
    """'optim.lr=1e-4' -> (['optim', 'lr'], 0.0001); values are JSON, else plain strings."""
    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value
