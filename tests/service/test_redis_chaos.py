"""Redis restarted under queued work, on a private redis-server (127.0.0.1, a free port, a
temporary directory), with append-only persistence and without: uploads keep answering 202
while Redis is down (the job rows are the record, the message is sent after commit), and once
Redis is back every job finishes exactly once, the lost messages re-sent by the sweep."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from services.jobs.broker import QUEUE
from services.jobs.models import Job
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

BEFORE, DURING = 8, 4  # uploads queued before the restart, and made while Redis is down


@pytest.mark.parametrize(
    ("appendonly", "stop_signal"),
    [("yes", signal.SIGKILL), ("no", signal.SIGTERM)],
    ids=["aof-sigkill", "no-persistence-sigterm"],
)
def test_no_job_is_lost_when_redis_restarts(
    appendonly: str, stop_signal: signal.Signals, pg_url: str, tmp_path: Path
) -> None:
    port = free_port()
    (tmp_path / "redis").mkdir()
    broker = f"redis://127.0.0.1:{port}/0"
    env = service_env(
        tmp_path,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=broker,
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="2",
    )
    site = f"site-redis-{appendonly}"
    server = start_redis(port, tmp_path / "redis", tmp_path / "redis-1.log", appendonly=appendonly)
    with Running() as running:
        running.processes.append(server)
        (base,) = running.apis(tmp_path, env)
        key = create_key(env, site)
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        accepted = []
        # no worker yet: the messages wait in Redis
        for i in range(BEFORE):
            response = upload_panel(client, tmp_path, f"P-{site}", f"S-{site}-before-{i}")
            assert response.status_code == 202, response.text
            accepted.append(response.json())
        queue = redis.Redis(host="127.0.0.1", port=port)
        assert queue.llen(QUEUE) == BEFORE
        time.sleep(1.5)  # appendfsync everysec: the last second reaches the disk

        server.kill(stop_signal)
        for i in range(DURING):
            response = upload_panel(client, tmp_path, f"P-{site}", f"S-{site}-during-{i}")
            assert response.status_code == 202, response.text
            accepted.append(response.json())
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] == "ok"

        server = start_redis(
            port, tmp_path / "redis", tmp_path / "redis-2.log", appendonly=appendonly
        )
        running.processes.append(server)
        # with AOF the queued messages survive; without persistence they are gone
        assert queue.llen(QUEUE) == (BEFORE if appendonly == "yes" else 0)

        running.worker(env, tmp_path, "--concurrency", "2", "--beat")
        for body in accepted:
            assert wait_job(client, body["job_id"], timeout=60)["status"] == "succeeded"
        assert client.get("/readyz").status_code == 200
        client.close()

    engine = create_engine(pg_url)
    with Session(engine) as session:
        samples = session.execute(
            select(Sample.sample_id, Sample.variant_count, func.count(Variant.id))
            .outerjoin(Variant, Variant.sample_pk == Sample.id)
            .where(Sample.site == site)
            .group_by(Sample.id)
        ).all()
        attempts = session.scalars(
            select(Job.attempts).join(Sample, Sample.id == Job.sample_pk).where(Sample.site == site)
        ).all()
    engine.dispose()
    assert len(samples) == BEFORE + DURING
    # each processed once: its rows written once, by one claimed attempt
    assert all(count == rows and rows > 0 for _, count, rows in samples), samples
    assert sorted(attempts) == [1] * (BEFORE + DURING)
