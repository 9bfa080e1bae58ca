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


def store(
    source: BinaryIO, uploads_dir: Path, *, max_bytes: int, check: StreamCheck | None = None
) -> StoredFile:
    """Copy a stream to its content address, hashing (and `check`ing) on the way; the temp
    file is renamed into place only when complete and accepted, so a reader never sees half a
    file and a refused upload leaves nothing behind."""
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
        sha = digest.hexdigest()
        final = path_for(uploads_dir, sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return StoredFile(sha256=sha, size=size, path=final)
