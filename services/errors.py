"""The domain error tree. HTTP statuses are attached at the edge (services/api), never here."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the service raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    """The thing does not exist, or belongs to another site (same answer on purpose)."""


class Conflict(DomainError):
    """The request clashes with stored state (duplicate id, changed bytes under the same id)."""


class InvalidInput(DomainError):
    """The request is well-formed HTTP but its content cannot be accepted."""


class PayloadTooLarge(InvalidInput):
    """An upload or body exceeds the configured cap."""


class VcfError(InvalidInput):
    """A variant file cannot be read. Names the file, the line (when known) and the reason."""

    def __init__(self, file: str, reason: str, line: int | None = None) -> None:
        where = f"{file}, line {line}" if line is not None else file
        super().__init__(f"{where}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason


class GenomeBuildError(VcfError):
    """The genome build cannot be told from the file and none was given, or they disagree."""
