"""The HTTP/1.1 protocol `ctdna serve` runs: uvicorn's httptools protocol with a cap on the
request head (request line and headers). httptools sets no limit of its own and gathers a
header piece by piece, so one client sending 100 MB of header held the event loop for seconds
(every other client's /healthz with it) and the process's memory grew by hundreds of MB. Past
CTDNA_MAX_HEADER_BYTES the request is answered 431 and the connection closed, as soon as the
bytes say so. The reverse proxy in deploy/ applies its own, stricter limits in front."""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.config import get_settings


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_limit = get_settings().max_header_bytes
        self._head_bytes = 0
        self._in_head = True

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        in_head = self._in_head
        super().data_received(data)
        # Bytes read while the head was incomplete before and after this piece were all head.
        if in_head and self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit:
                self._refuse()

    def _refuse(self) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request Header Fields Too Large",
                "status": 431,
                "detail": f"the request line and headers exceed {self._head_limit} bytes",
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/problem+json\r\n"
            + f"content-length: {len(body)}\r\n".encode()
            + b"connection: close\r\n\r\n"
            + body
        )
        self.transport.close()
