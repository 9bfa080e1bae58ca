"""Shared fixtures: real PostgreSQL (a fresh database migrated by Alembic), real Redis, and
helpers to run the real API and Celery worker as subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
PANEL_VCF = ROOT / "tests" / "data" / "vcf" / "panel_grch38.vcf"
# Real files from public test suites, with their sources and licences in PROVENANCE.md.
PUBLIC_DATA = ROOT / "tests" / "data" / "public"
PG_ADMIN_URL = os.environ.get("CTDNA_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("CTDNA_TEST_REDIS", "redis://127.0.0.1:6379")


# Service test modules that run in this process (a database, no server or worker process);
# every other module of tests/service starts real processes and is end-to-end.
IN_PROCESS_SERVICE_MODULES = frozenset(
    {
        "test_amendments",
        "test_background_jobs",
        "test_hardening_units",
        "test_read_plans",
        "test_tracked_sets",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the end-to-end tests (``make test`` runs the others, ``make test-e2e`` these)."""
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name == "service" and path.stem not in IN_PROCESS_SERVICE_MODULES:
            item.add_marker(pytest.mark.e2e)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def public_data() -> Path:
    return PUBLIC_DATA


# The role the service's processes connect as in tests, as in the documented deployment: it
# owns nothing (services/migrations.grant_app_role). The tests themselves connect as the owner.
APP_ROLE = "ctdna_app_test"
# owner URL of each fresh database -> the same database as APP_ROLE (service_env swaps them)
APP_URLS: dict[str, str] = {}


def ensure_app_role() -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        # several test sessions may create it at once: the loser's error is expected
        conn.execute(
            "DO $$ BEGIN CREATE ROLE " + APP_ROLE + " LOGIN; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database migrated with the real Alembic migrations, the application
    role granted on it, dropped after. Yields the owner's URL; `service_env` gives the
    service's processes the application role's."""
    from services.migrations import grant_app_role, upgrade

    name = f"ctdna_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        upgrade(url)
        ensure_app_role()
        grant_app_role(url, APP_ROLE)
        host = base.split("@", 1)[-1]
        APP_URLS[url] = f"postgresql+psycopg://{APP_ROLE}@{host}/{name}"
        yield url
    finally:
        APP_URLS.pop(url, None)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (the tests that need the whole
    database to themselves use fresh_database())."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis logical database of its own, emptied first: one that no client is connected
    to, since other test runs on this machine may share the server (a worker of theirs on our
    database would take our messages)."""
    busy = {int(c["db"]) for c in redis.Redis.from_url(REDIS_BASE).client_list()}
    idle = [db for db in range(1, 15) if db not in busy]
    db = secrets.choice(idle) if idle else 1 + secrets.randbelow(14)
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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                self.kill(15)
            except subprocess.TimeoutExpired:
                self.kill(9)  # a shutdown that hangs must not leave the process behind
        # The leader may be gone while its children are not (`serve` spawns a worker and the
        # demo loader in its group): nothing of the group may outlive the test.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, 9)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def service_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a service process: a test database is reached as the application
    role, like a deployment's API and workers (the tests' own connections are the owner's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTDNA_")}
    env.update({"CTDNA_DATA_DIR": str(tmp), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    database = env.get("CTDNA_DATABASE_URL")
    if database in APP_URLS:
        env["CTDNA_DATABASE_URL"] = APP_URLS[database]
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


def start_redis(port: int, folder: Path, log: Path, *, appendonly: str = "no") -> Process:
    """A private redis-server on 127.0.0.1:`port` keeping its files in `folder`, for tests
    that stop it or must not share the machine's Redis; returns once it answers."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    argv = [server, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder)]
    argv += ["--appendonly", appendonly, "--appendfsync", "everysec", "--save", ""]
    argv += ["--maxmemory-policy", "noeviction"]
    process = Process(argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, log)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 15
    while True:
        try:
            if client.ping():  # answers LOADING while it reads its append-only file
                return process
        except redis.exceptions.RedisError:
            if process.popen.poll() is not None or time.monotonic() > deadline:
                process.stop()
                raise RuntimeError(f"redis-server did not start:\n{process.output()}") from None
            time.sleep(0.05)


def create_key(env: dict[str, str], site: str, scopes: str = "ingest,read") -> str:
    out = ctdna(env, "keys", "create", "--site", site, "--scopes", scopes)
    return out.stdout.strip().splitlines()[-1]


def create_keys(env: dict[str, str], *specs: tuple[str, str]) -> list[str]:
    """Several keys, (site, scopes) each, made by parallel `ctdna keys create` runs."""
    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        return list(pool.map(lambda spec: create_key(env, *spec), specs))


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


class Running:
    """The processes a fixture starts, all stopped when the `with` block ends, also when the
    setup fails half-way (nothing left consuming a shared broker after the test)."""

    def __init__(self) -> None:
        self.processes: list[Process] = []

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *_: object) -> None:
        for process in reversed(self.processes):
            process.stop()

    def worker(self, env: dict[str, str], log_dir: Path, *extra: str) -> Process:
        self.processes.append(start_worker(env, log_dir, *extra))
        return self.processes[-1]

    def apis(self, log_dir: Path, *envs: dict[str, str]) -> list[str]:
        """Start one API per environment, in parallel; their base URLs."""
        with ThreadPoolExecutor(max_workers=len(envs)) as pool:
            futures = [pool.submit(start_api, env, log_dir, "--no-worker") for env in envs]
        bases = []
        for future in futures:
            if future.exception() is None:
                process, base = future.result()
                self.processes.append(process)
                bases.append(base)
        for future in futures:
            future.result()  # raises the first failure, once every started API is tracked
        return bases


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    job: dict[str, object] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job.get("status") in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def wait_idle(database_url: str, timeout: float = 120) -> None:
    """Until no job of the database is queued or running (the recomputes that a sample, an
    event or a refitted background model queued for other patients have all run)."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            if time.monotonic() > deadline:
                pending = row[0] if row else "?"
                raise AssertionError(f"{pending} jobs still pending after {timeout}s")
            time.sleep(0.2)


def background_vcf(directory: Path, name: str, n_loci: int = 40, depth: int = 5000) -> Path:
    """A normal plasma (a panel-of-normals sample) at `n_loci` positions of PIK3CA with a clean
    background (0 or 1 mutant read each): enough loci for an assay's background model, which
    a site needs before its MRD draws can be called (fewer than 15 loci: INDETERMINATE,
    background unknown)."""
    lines = PANEL_VCF.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    records = []
    for i in range(n_loci):
        pos = 179_150_001 + 997 * i
        alt = i % 3 == 0
        records.append(
            f"chr3\t{pos}\t.\tA\tC\t.\tPASS\tDP={2 * depth}\tGT:AD:AF:DP"
            f"\t0/0:{depth},0:0.0:{depth}\t0/1:{depth - alt},{int(alt)}:{alt / depth:.6f}:{depth}"
        )
    path = directory / f"{name}.vcf"
    path.write_text("\n".join([header[0], f"##ctdna_test={name}", *header[1:], *records]) + "\n")
    return path


def panel_vcf(directory: Path, tag: str) -> Path:
    """The small GRCh38 panel VCF with a header line naming `tag`: other bytes, so another
    sample, processed in well under a second."""
    lines = PANEL_VCF.read_text().splitlines(keepends=True)
    path = directory / f"panel-{tag}.vcf"
    path.write_text(lines[0] + f"##ctdna_test={tag}\n" + "".join(lines[1:]))
    return path


def upload_panel(
    client: httpx.Client, directory: Path, patient_id: str, sample_id: str, **headers: str
) -> httpx.Response:
    """Post a panel VCF as a pipeline would, creating the patient if the site has none."""
    path = panel_vcf(directory, sample_id)
    with path.open("rb") as fh:
        return client.post(
            "/v1/samples",
            data={
                "patient_id": patient_id,
                "sample_id": sample_id,
                "collection_date": "2025-02-01",
                "sample_type": "plasma",
                "genome_build": "GRCh38",
                "create_patient": "true",
            },
            files={"file": (path.name, fh)},
            headers=headers,
        )


@dataclass
class Receiver:
    """A webhook receiver process on 127.0.0.1 (tests/service/receiver.py) that verifies every
    request with standardwebhooks and logs what it saw."""

    url: str
    control: Path
    log: Path
    process: Process

    def set(self, **control: str) -> None:
        current = json.loads(self.control.read_text()) if self.control.exists() else {}
        self.control.write_text(json.dumps({**current, **control}))

    def seen(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def start_receiver(tmp: Path, secret: str = "whsec_unset") -> Receiver:
    port = free_port()
    control, log = tmp / "control.json", tmp / "received.jsonl"
    control.write_text(json.dumps({"mode": "ok", "secret": secret}))
    script = Path(__file__).resolve().parent / "service" / "receiver.py"
    process = Process(
        [sys.executable, str(script), str(port), str(control), str(log)],
        service_env(tmp),
        tmp / "receiver.log",
    )
    return Receiver(url=f"http://127.0.0.1:{port}/hook", control=control, log=log, process=process)
