"""Keyset (cursor) pagination, the one way every list of the API pages.

A page is `WHERE (k1, k2) > (:last1, :last2) ORDER BY k1, k2 LIMIT n + 1` over a sort key that
is unique and indexed: no OFFSET, so a page costs the same wherever it is, and rows inserted or
removed while a client walks the list never make it see an older row twice or skip one. The
cursor handed out is opaque to clients: base64url of the JSON of the list's name and the last
row's sort key. A cursor that does not decode to a key of this list (tampered, truncated, from
another list) is an `InvalidInput`; a well-formed one only moves the starting point inside the
rows the caller may see anyway (the site filter is part of every query, not of the cursor)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Integer, Select, String, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from services.errors import InvalidInput

Row = TypeVar("Row")
Stmt = TypeVar("Stmt", bound=Select)  # type: ignore[type-arg]
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_CURSOR_CHARS = 4096


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What the client asked for: the `next_cursor` of the previous page (None: the first),
    and how many rows at most."""

    cursor: str | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class Keyset:
    """The sort key of one list. `columns` must be unique together (end with a primary or
    unique key) and lead an index of the filtered query."""

    name: str
    columns: tuple[InstrumentedAttribute[Any], ...]
    descending: bool = False

    def select_page(self, stmt: Stmt, page: PageRequest) -> Stmt:
        """`stmt` restricted to the rows after the cursor, in key order, one row more than
        the page (the extra row says whether there is a next page)."""
        if page.cursor is not None:
            last = self.decode(page.cursor)
            key = tuple_(*self.columns) if len(self.columns) > 1 else self.columns[0]
            bound: Any = tuple(last) if len(self.columns) > 1 else last[0]
            stmt = stmt.where(key < bound if self.descending else key > bound)
        order = [c.desc() if self.descending else c.asc() for c in self.columns]
        return stmt.order_by(*order).limit(page.limit + 1)

    def paginate(
        self,
        rows: Sequence[Row],
        page: PageRequest,
        key: Callable[[Row], Sequence[Any]] | None = None,
    ) -> tuple[list[Row], str | None]:
        """The page's rows and the cursor of the next page (None on the last). `key` gives a
        row's sort key; by default the columns' attributes of the row itself."""
        items = list(rows[: page.limit])
        if len(rows) <= page.limit or not items:
            return items, None
        last = items[-1]
        values = key(last) if key is not None else [getattr(last, c.key) for c in self.columns]
        return items, self.encode(values)

    def encode(self, values: Sequence[Any]) -> str:
        plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
        raw = json.dumps([self.name, *plain], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, cursor: str) -> list[Any]:
        try:
            raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
            name, *values = json.loads(raw)
        # RecursionError: a cursor of nested brackets, within the length cap, is deeper than
        # the JSON decoder will go.
        except (binascii.Error, ValueError, TypeError, RecursionError):
            raise _invalid() from None
        if name != self.name or len(values) != len(self.columns):
            raise _invalid()
        return [_typed(column, value) for column, value in zip(self.columns, values, strict=True)]


def _typed(column: InstrumentedAttribute[Any], value: Any) -> Any:
    """The cursor's JSON value as the column's Python type, or InvalidInput."""
    kind = column.type
    kind = getattr(kind, "impl", kind)  # a TypeDecorator (UtcDateTime) by what it stores
    if isinstance(kind, DateTime) and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _invalid() from None
        if (moment.tzinfo is not None) == bool(kind.timezone):
            return moment
    if isinstance(kind, Integer) and type(value) is int and _INT64[0] <= value <= _INT64[1]:
        return value
    if isinstance(kind, String) and type(value) is str and "\x00" not in value:
        return value
    raise _invalid()


_INT64 = (-(2**63), 2**63 - 1)  # what a BIGINT key can hold; a larger number names no row


def _invalid() -> InvalidInput:
    return InvalidInput("cursor must be the next_cursor of a previous page of this list")
