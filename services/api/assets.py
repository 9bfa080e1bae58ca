"""Static files shipped inside installed packages (plotly.js, Swagger UI, ReDoc), served by
the app itself so that no page loads anything from another origin (a clinic may be offline).
Each is read once per process, and gzipped once when the browser accepts it."""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

from fastapi import Request, Response

# The URLs carry the package version (?v=), so browsers may keep the files.
LONG_CACHE = "public, max-age=31536000, immutable"
TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
}


Replacements = tuple[tuple[bytes, bytes], ...]


@lru_cache(maxsize=16)
def _packaged(package: str, path: str, compressed: bool, replace: Replacements) -> bytes:
    content = (resources.files(package) / path).read_bytes()
    for old, new in replace:
        content = content.replace(old, new)
    # plotly.min.js is 4.8 MB as shipped, about 1.4 MB gzipped
    return gzip.compress(content, compresslevel=6, mtime=0) if compressed else content


def packaged(package: str, path: str, request: Request, replace: Replacements = ()) -> Response:
    """The file `path` of the installed `package` (with `replace` applied: (old, new) byte
    strings), gzipped if the client accepts it."""
    suffix = path[path.rfind(".") :]
    compressed = suffix != ".png" and "gzip" in request.headers.get("accept-encoding", "")
    headers = {"Cache-Control": LONG_CACHE, "Vary": "Accept-Encoding"}
    if compressed:
        headers["Content-Encoding"] = "gzip"
    content = _packaged(package, path, compressed, replace)
    return Response(content, media_type=TYPES[suffix], headers=headers)
