"""A webhook receiver for tests, run as its own process on 127.0.0.1. It verifies every request
with the standardwebhooks library and appends what it saw to a JSON-lines log.

Its behaviour is read from a control file on every request: {"mode": "ok" | "down" | "gone",
"secret": "whsec_..."}; a request that does not verify is answered 401.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks import Webhook, WebhookVerificationError

CONTROL = Path(sys.argv[2])
LOG = Path(sys.argv[3])


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
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
        code = {"ok": 200, "down": 503, "gone": 410}[mode] if verified else 401
        with LOG.open("a") as log:
            log.write(
                json.dumps(
                    {
                        "webhook_id": headers.get("webhook-id"),
                        "verified": verified,
                        "code": code,
                        "body": json.loads(body),
                    }
                )
                + "\n"
            )
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok" if code == 200 else b"nope")

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
