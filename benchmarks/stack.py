"""The servers a benchmark runs against: a fresh PostgreSQL database (Alembic-migrated, dropped
at the end), a dedicated Redis logical database (flushed first), a data directory, and the API
and worker subprocesses, all on 127.0.0.1. The benchmark process itself is configured to the
same database and broker so that it can use the service layer directly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """A service subprocess in its own session (so that it and its pool children stop together),
    its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        self._log.close()

    def children(self) -> list[int]:
        """Pids whose parent is this process (Celery's prefork pool, uvicorn's workers)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may hold spaces: split after it.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.popen.pid:
                found.append(int(entry.name))
        return found


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (the peak resident set size) of a live process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Stack:
    """One benchmark run's database, broker, data directory and child processes."""

    pg_admin_url: str
    redis_url: str
    workdir: Path
    database: str = field(default_factory=lambda: f"ctdna_bench_{uuid.uuid4().hex[:10]}")
    children: list[Child] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        base = self.pg_admin_url.rsplit("/", 1)[0]
        return f"{base}/{self.database}".replace("postgresql://", "postgresql+psycopg://", 1)

    @property
    def psycopg_url(self) -> str:
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTDNA_")}
        env.update(
            CTDNA_DATABASE_URL=self.database_url,
            CTDNA_BROKER_URL=self.redis_url,
            CTDNA_DATA_DIR=str(self.data_dir),
            CTDNA_LOG_JSON="true",
            CTDNA_LOG_LEVEL="INFO",
            # No beat runs here; a long resend delay keeps a sweep from doubling the work.
            CTDNA_JOB_RESEND_AFTER_SECONDS="3600",
            # Load from one key is the point here: the per-key limits still run (their Redis
            # round trip is part of every request) but never refuse.
            CTDNA_RATE_LIMIT_READS_PER_SECOND="1000000",
            CTDNA_RATE_LIMIT_READS_BURST="1000000",
            CTDNA_RATE_LIMIT_UPLOADS_PER_SECOND="1000000",
            CTDNA_RATE_LIMIT_UPLOADS_BURST="1000000",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def setup(self) -> None:
        from services.migrations import upgrade

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        upgrade(self.database_url)
        redis.Redis.from_url(self.redis_url).flushdb()
        # This process uses the service layer against the same database and broker.
        os.environ.update({k: v for k, v in self.env().items() if k.startswith("CTDNA_")})
        _reset_service_caches()

    def teardown(self, keep_database: bool = False) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        from services.db import get_engine

        get_engine().dispose()
        if not keep_database:
            with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        redis.Redis.from_url(self.redis_url).flushdb()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- processes --

    def start_api(self, *, workers: int = 1, timeout: float = 60) -> tuple[Child, str]:
        port = free_port()
        child = self._spawn(
            ["serve", "--no-worker", "--port", str(port), "--workers", str(workers)], f"api-{port}"
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"API exited early; see {child.log_path}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return child, base
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"API did not start in {timeout}s; see {child.log_path}")

    def start_worker(self, *, concurrency: int) -> Child:
        return self._spawn(
            ["worker", "--concurrency", str(concurrency), "--no-beat"],
            f"worker-{uuid.uuid4().hex[:6]}",
        )

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def _spawn(self, args: list[str], name: str) -> Child:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "services.cli", *args]
        child = Child(argv, self.env(), logs / f"{name}.log")
        self.children.append(child)
        return child


def log_events(path: Path, event: str) -> Iterator[dict[str, Any]]:
    """The JSON log lines of one structlog event in a child's log."""
    with path.open(errors="replace") as handle:
        for line in handle:
            if event not in line or not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                yield record


def _reset_service_caches() -> None:
    from services.config import get_settings
    from services.db import get_engine, get_session_factory
    from services.jobs.broker import get_producer

    get_settings.cache_clear()
    get_engine.cache_clear()
    get_session_factory.cache_clear()
    get_producer.cache_clear()


def make_stack(pg_admin_url: str, redis_url: str) -> Stack:
    return Stack(pg_admin_url, redis_url, Path(tempfile.mkdtemp(prefix="ctdna-bench-")))
