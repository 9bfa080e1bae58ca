"""Uploaded files, kept content-addressed under their sha256 in CTDNA_DATA_DIR/uploads, so a
later change of tracked loci or monitored genes can re-extract from the original bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from services.errors import PayloadTooLarge

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    sha256: str
    size: int
    path: Path


class StreamCheck(Protocol):
    """Judges the bytes as they are copied; raises to refuse the upload."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...


def path_for(uploads_dir: Path, sha256: str) -> Path:
    return uploads_dir / sha256[:2] / sha256


@dataclass(slots=True)
class Staged:
    """An accepted upload, complete in the temporary folder, not yet at its content address:
    several files of one request are all judged before any is kept."""

    sha256: str
    size: int
    tmp_path: Path
    final_path: Path

    def commit(self) -> StoredFile:
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp_path, self.final_path)
        return StoredFile(sha256=self.sha256, size=self.size, path=self.final_path)

    def discard(self) -> None:
        self.tmp_path.unlink(missing_ok=True)


def stage(
    source: BinaryIO, uploads_dir: Path, *, max_bytes: int, check: StreamCheck | None = None
) -> Staged:
    """Copy a stream to a temporary file, hashing (and `check`ing) on the way; a refused
    upload leaves nothing behind."""
    tmp_dir = uploads_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"upload exceeds the {max_bytes}-byte limit")
                if check is not None:
                    check.feed(chunk)
                digest.update(chunk)
                out.write(chunk)
        if check is not None:
            check.finish()
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    sha = digest.hexdigest()
    return Staged(sha, size, Path(tmp_name), path_for(uploads_dir, sha))


def store(
    source: BinaryIO, uploads_dir: Path, *, max_bytes: int, check: StreamCheck | None = None
) -> StoredFile:
    """Copy a stream to its content address (see `stage`); the temp file is renamed into
    place only when complete and accepted, so a reader never sees half a file."""
    return stage(source, uploads_dir, max_bytes=max_bytes, check=check).commit()
