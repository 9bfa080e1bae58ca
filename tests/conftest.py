"""Shared fixtures: real PostgreSQL (a fresh database migrated by Alembic), real Redis, and
helpers to run the real API and Celery worker as subprocesses."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PG_ADMIN_URL = os.environ.get("CTDNA_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("CTDNA_TEST_REDIS", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated with the real Alembic
    migrations, dropped at the end."""
    from services.migrations import upgrade

    name = f"ctdna_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis logical database of its own, emptied first."""
    db = 1 + secrets.randbelow(14)
    url = f"{REDIS_BASE}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


class Process:
    """A child process of the service with its output captured to a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self, sig: int = 9) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.kill(15)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def service_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTDNA_")}
    env.update({"CTDNA_DATA_DIR": str(tmp), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def ctdna(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=True,
    )


def create_key(env: dict[str, str], site: str, scopes: str = "ingest,read") -> str:
    out = ctdna(env, "keys", "create", "--site", site, "--scopes", scopes)
    return out.stdout.strip().splitlines()[-1]


def start_api(env: dict[str, str], log_dir: Path, *extra: str) -> tuple[Process, str]:
    port = free_port()
    proc = Process(
        [sys.executable, "-m", "services.cli", "serve", "--port", str(port), *extra],
        env,
        log_dir / f"api-{port}.log",
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"API exited early:\n{proc.output()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"API did not start:\n{proc.output()}")


def start_worker(env: dict[str, str], log_dir: Path, *extra: str) -> Process:
    name = f"worker-{uuid.uuid4().hex[:6]}"
    return Process(
        [sys.executable, "-m", "services.cli", "worker", *extra], env, log_dir / f"{name}.log"
    )


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    job: dict[str, object] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job.get("status") in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")
