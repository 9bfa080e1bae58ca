"""`ctdna serve` with limits (issue 18, item 9): a request whose head (request line and
headers) passes CTDNA_MAX_HEADER_BYTES is refused with 431 as soon as it does, and the other
clients of the same process are not held up while it streams (100 MB of header used to stall
/healthz for seconds)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Process, service_env, start_api

pytestmark = [pytest.mark.postgres]


@pytest.fixture(scope="module")
def api(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Process, str]]:
    tmp = tmp_path_factory.mktemp("serve-limits")
    env = service_env(tmp, CTDNA_DATABASE_URL=pg_url, CTDNA_BROKER_URL=redis_url)
    process, base = start_api(env, tmp, "--no-worker")
    try:
        yield process, base
    finally:
        process.stop()


def huge_header(base: str, size: int, outcome: dict[str, object]) -> None:
    parts = urlsplit(base)
    chunk = b"a" * (1 << 20)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server hung up: the refusal is read below
        outcome["sent"] = sent
        try:
            outcome["answer"] = sock.recv(200)
        except OSError as exc:
            outcome["answer"] = repr(exc).encode()
    outcome["seconds"] = time.monotonic() - started


def test_a_100_mb_header_is_refused_and_does_not_stall_other_clients(
    api: tuple[Process, str],
) -> None:
    _, base = api
    outcome: dict[str, object] = {}
    sender = threading.Thread(target=huge_header, args=(base, 100 * 1024**2, outcome))
    latencies = []
    with httpx.Client(base_url=base, timeout=30) as client:
        sender.start()
        while sender.is_alive() and len(latencies) < 400:
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
        sender.join(timeout=120)
    assert not sender.is_alive()
    assert outcome["answer"].startswith(b"HTTP/1.1 431"), outcome  # type: ignore[union-attr]
    assert int(outcome["sent"]) < 16 * 1024**2, "refused long before the header ended"  # type: ignore[call-overload]
    assert max(latencies) < 1.0, sorted(latencies)[-5:]


def test_headers_within_the_limit_are_served(api: tuple[Process, str]) -> None:
    _, base = api
    response = httpx.get(f"{base}/healthz", headers={"X-Padding": "p" * 30_000}, timeout=10)
    assert response.status_code == 200
