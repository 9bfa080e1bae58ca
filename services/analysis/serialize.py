"""Turning the scientific core's frozen dataclasses into the JSON bodies the API serves."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from typing import Any

import orjson


def jsonable(value: Any) -> Any:
    """Dataclasses, enums, dates, tuples to plain JSON values; non-finite floats to None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return jsonable(value.item())
    return value


def _default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars orjson does not know
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    """The same JSON as ``json.dumps(jsonable(value))`` in one native pass: orjson writes
    dataclasses, enums and dates itself, and non-finite floats as null."""
    return orjson.dumps(value, default=_default, option=_OPTIONS).decode()
