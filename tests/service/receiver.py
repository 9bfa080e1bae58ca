"""A webhook receiver for tests, run as its own process on 127.0.0.1. It verifies every request
with the standardwebhooks library and appends what it saw to a JSON-lines log.

Its behaviour is read from a control file on every request: {"mode": "ok" | "down" | "gone" |
"drip" | "huge", "secret": "whsec_..."}; a request that does not verify is answered 401.
"drip" answers 200 one byte every `drip_seconds` (a receiver that never trips a read timeout);
"huge" answers 200 with a body of `huge_bytes` (default 400 MB) and logs how much of it could
be written before the sender hung up.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks import Webhook, WebhookVerificationError

CONTROL = Path(sys.argv[2])
LOG = Path(sys.argv[3])


def log(entry: dict[str, object]) -> None:
    with LOG.open("a") as out:
        out.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        started = time.time()
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        control = json.loads(CONTROL.read_text())
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified = False
        try:
            Webhook(control["secret"]).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            pass
        mode = control.get("mode", "ok")
        # like a real receiver: an unverifiable request is refused (and so retried)
        code = {"down": 503, "gone": 410}.get(mode, 200) if verified else 401
        entry = {
            "webhook_id": headers.get("webhook-id"),
            "verified": verified,
            "code": code,
            "body": json.loads(body),
            "started": started,
        }
        log(entry)
        if verified and mode == "drip":
            self._drip(entry, float(control.get("drip_seconds", 1)))
        elif verified and mode == "huge":
            self._huge(entry, int(control.get("huge_bytes", 400 * 1024**2)))
        else:
            payload = b"ok" if code == 200 else b"nope"
            self.send_response(code)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def _drip(self, entry: dict[str, object], seconds: float) -> None:
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-padding: " + b"." * 40 + b"\r\n\r\nok"
        try:
            for byte in answer:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(seconds)
        except OSError:
            pass
        log({**entry, "event": "ended", "ended": time.time()})
        self.close_connection = True

    def _huge(self, entry: dict[str, object], size: int) -> None:
        self.send_response(200)
        self.send_header("content-length", str(size))
        self.end_headers()
        written = 0
        block = bytes(1 << 16)
        try:
            while written < size:
                self.wfile.write(block)
                written += len(block)
        except OSError:
            pass
        log({**entry, "event": "ended", "ended": time.time(), "written": written})
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
