"""PostgreSQL stopped (immediate mode, as in a crash) and started again under a stream of
uploads, on a private cluster made for this test (initdb + pg_ctl on a free port of 127.0.0.1,
in a temporary directory; the machine's shared cluster is never touched): clients get 503
problem+json while it is down, never a 500; uploads succeed again once it is back, without a
restart of the API or the worker; and no sample is half-written."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from services.jobs.models import Job
from services.migrations import upgrade
from services.samples.models import Sample
from services.variants.models import Variant
from tests.conftest import (
    Running,
    create_key,
    free_port,
    service_env,
    start_redis,
    upload_panel,
    wait_job,
)

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))


@dataclass
class Cluster:
    """A private PostgreSQL cluster, run as the `postgres` user when the tests run as root
    (the server refuses to run as root)."""

    bindir: Path
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/ctdna"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, *argv], check=True, capture_output=True, text=True, timeout=60, cwd="/"
        )

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.folder / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.folder} -c fsync=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.folder / "data"),
            "-l",
            str(self.folder / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", mode, "-w", "stop"
        )


def _cluster_or_skip() -> tuple[Path, Path]:
    if not BINDIRS:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run a cluster as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing")
    folder = Path(tempfile.mkdtemp(prefix="ctdna-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    return Path(BINDIRS[-1]), folder


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bindir, folder = _cluster_or_skip()
    cluster = Cluster(bindir, folder, free_port())
    try:
        cluster.init()
        cluster.start()
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE ctdna")
        upgrade(cluster.url)
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop("immediate")  # fails when not running: nothing to stop
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Outcome:
    sample_id: str
    phase: str
    status: int
    content_type: str
    retry_after: str | None


def test_clients_see_503_then_success_and_nothing_half_written(
    cluster: Cluster, tmp_path: Path
) -> None:
    port = free_port()
    (tmp_path / "redis").mkdir()
    env = service_env(
        tmp_path,
        CTDNA_DATABASE_URL=cluster.url,
        CTDNA_BROKER_URL=f"redis://127.0.0.1:{port}/0",
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="2",
        CTDNA_RATE_LIMIT_UPLOADS_PER_SECOND="0",
    )
    with Running() as running:
        # a broker of its own: this test is about the database
        running.processes.append(start_redis(port, tmp_path / "redis", tmp_path / "redis.log"))
        running.worker(env, tmp_path, "--concurrency", "2", "--beat")
        (base,) = running.apis(tmp_path, env)
        key = create_key(env, "site-pg")
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        first = upload_panel(client, tmp_path, "P-pg", "S-pg-first")
        assert first.status_code == 202, first.text
        assert wait_job(client, first.json()["job_id"])["status"] == "succeeded"
        # the hot analysis reads keep their own pooled connections, without a pre-ping
        assert client.get("/v1/patients/P-pg/mrd").status_code == 200

        phase = "up"
        outcomes: list[Outcome] = []
        stop = threading.Event()

        def upload_until_stopped() -> None:
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as uploader:
                for i in range(400):  # bounded; stopped by the event well before
                    if stop.is_set():
                        return
                    sample_id = f"S-pg-{i:03d}"
                    current = phase
                    response = upload_panel(uploader, tmp_path, f"P-pg-{i % 4}", sample_id)
                    outcomes.append(
                        Outcome(
                            sample_id,
                            current,
                            response.status_code,
                            response.headers.get("content-type", ""),
                            response.headers.get("retry-after"),
                        )
                    )
                    time.sleep(0.25)

        thread = threading.Thread(target=upload_until_stopped)
        thread.start()
        try:
            time.sleep(1.2)
            phase = "down"
            cluster.stop("immediate")
            time.sleep(2.5)
            down_ready = client.get("/readyz")
            down_read = client.get("/v1/patients/P-pg")
            phase = "restarting"
            cluster.start()
            time.sleep(0.5)
            phase = "back"
            time.sleep(2)
            # its pooled connection died with the server: the read is run again on a new one
            back_read = client.get("/v1/patients/P-pg/mrd")
        finally:
            stop.set()
            thread.join(timeout=60)

        assert down_ready.status_code == 503
        assert down_ready.json()["checks"]["database"].startswith("unavailable")
        assert down_read.status_code == 503
        assert down_read.headers["content-type"].startswith("application/problem+json")
        assert back_read.status_code == 200, back_read.text
        statuses = {o.status for o in outcomes}
        assert statuses <= {202, 503}, [o for o in outcomes if o.status not in (202, 503)]
        unavailable = [o for o in outcomes if o.status == 503]
        assert unavailable, "no upload met the outage"
        assert all(
            o.content_type.startswith("application/problem+json") and o.retry_after
            for o in unavailable
        )
        assert [o for o in outcomes if o.phase == "up" and o.status == 202]
        assert [o for o in outcomes if o.phase == "back" and o.status == 202]

        # the uploads refused during the outage go through now, once each
        for o in unavailable:
            patient_id = f"P-pg-{int(o.sample_id.rsplit('-', 1)[1]) % 4}"
            retry = upload_panel(client, tmp_path, patient_id, o.sample_id)
            assert retry.status_code in (200, 202), retry.text
        for o in outcomes:
            job_id = client.get(f"/v1/samples/{o.sample_id}").json()["job_id"]
            assert wait_job(client, job_id, timeout=60)["status"] == "succeeded"
        client.close()

    engine = create_engine(cluster.url)
    with Session(engine) as session:
        rows = session.execute(
            select(
                Sample.sample_id,
                Sample.status,
                Sample.variant_count,
                func.count(func.distinct(Job.id)),
                func.count(func.distinct(Variant.id)),
            )
            .outerjoin(Job, Job.sample_pk == Sample.id)
            .outerjoin(Variant, Variant.sample_pk == Sample.id)
            .where(Sample.site == "site-pg")
            .group_by(Sample.id)
        ).all()
    engine.dispose()
    expected = {"S-pg-first", *(o.sample_id for o in outcomes)}
    assert {r[0] for r in rows} == expected
    # every sample: exactly one ingest job, processed, its variant rows complete
    for sample_id, status, count, jobs_n, variants_n in rows:
        assert (status, jobs_n, count) == ("processed", 1, variants_n), sample_id
