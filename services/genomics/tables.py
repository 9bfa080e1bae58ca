"""Versioned, cited rule tables kept as TOML data (the resistance map, the receptor rules):
reading one and the checks every such table shares."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from services.errors import InvalidInput


def versioned_entries(source: Path, error: type[InvalidInput], what: str) -> tuple[str, list[Any]]:
    """The ``version`` and the ``[[entry]]`` tables of the TOML file ``source``; raises
    ``error`` naming the file when it cannot be read, has no non-empty string version, or no
    entries. ``what`` names the table in the message ("the resistance map")."""
    try:
        document = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{source}: cannot read {what}: {exc}") from exc
    version = document.get("version")
    if not isinstance(version, str) or not version.strip():
        raise error(f"{source}: a non-empty string 'version' is required")
    entries = document.get("entry")
    if not isinstance(entries, list) or not entries:
        raise error(f"{source}: no [[entry]] tables")
    return version, entries
