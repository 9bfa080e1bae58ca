"""API hygiene on the real stack (PostgreSQL, Redis, a Celery worker, API processes):
Prometheus metrics of the background work read from the database, per-key rate limits shared
through Redis (a flood of uploads gets 429s and loses or half-writes nothing), and
Idempotency-Key on POSTs."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from services.api.ratelimit import Leases, Limit, LocalBuckets, RateLimit
from services.idempotency import service as idempotency
from services.jobs.models import Job
from services.samples.models import Sample
from tests.conftest import (
    ROOT,
    Running,
    create_key,
    create_keys,
    free_port,
    service_env,
    start_api,
    upload_panel,
    wait_job,
)

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

UPLOAD_RATE, UPLOAD_BURST = 1, 6


@dataclass
class Stack:
    base: str
    limited: tuple[str, str]  # two API processes with small limits, one Redis budget
    env: dict[str, str]
    tmp: Path
    key: str
    admin: str

    def client(self, key: str | None = None, base: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=base or self.base,
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=30,
        )


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("hygiene")
    env = service_env(
        tmp,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_METRICS_CACHE_SECONDS="0",
        CTDNA_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        CTDNA_WEBHOOK_RETRY_SCALE="0.01",
        # the sweep re-sends any message lost on the way (or taken by another test run
        # sharing this Redis)
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="3",
    )
    limited_env = {
        **env,
        "CTDNA_RATE_LIMIT_UPLOADS_PER_SECOND": str(UPLOAD_RATE),
        "CTDNA_RATE_LIMIT_UPLOADS_BURST": str(UPLOAD_BURST),
        "CTDNA_RATE_LIMIT_READS_PER_SECOND": "5",
        "CTDNA_RATE_LIMIT_READS_BURST": "20",
    }
    with Running() as running:
        running.worker(env, tmp, "--concurrency", "2", "--beat")
        base, *limited = running.apis(tmp, env, limited_env, limited_env)
        key, admin = create_keys(env, ("site-hygiene", "ingest,read"), ("site-hygiene", "admin"))
        yield Stack(
            base=base, limited=(limited[0], limited[1]), env=env, tmp=tmp, key=key, admin=admin
        )


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_show_ingests_failures_queue_and_webhooks(stack: Stack) -> None:
    ingest = (("task", "samples.ingest"),)
    with stack.client() as client, stack.client(stack.admin) as admin:
        before = scrape(client)
        # an endpoint nobody listens on: every attempt is a network error
        closed = f"http://127.0.0.1:{free_port()}/hook"
        endpoint = admin.post(
            "/v1/webhook-endpoints", json={"url": closed, "events": ["sample.processed"]}
        )
        assert endpoint.status_code == 201, endpoint.text
        good = upload_panel(client, stack.tmp, "P-metrics", "S-metrics-ok")
        # a VCF by its first line (so the upload is taken), wrong further in: the job fails
        bad_file = ROOT / "tests" / "data" / "vcf" / "bad_pos_line.vcf"
        with bad_file.open("rb") as fh:
            bad = client.post(
                "/v1/samples",
                data={
                    "patient_id": "P-metrics",
                    "sample_id": "S-metrics-bad",
                    "collection_date": "2025-02-01",
                    "sample_type": "plasma",
                    "genome_build": "GRCh38",
                },
                files={"file": ("bad_pos_line.vcf", fh)},
            )
        assert wait_job(client, good.json()["job_id"])["status"] == "succeeded"
        assert wait_job(client, bad.json()["job_id"])["status"] == "failed"
        deadline = time.monotonic() + 30
        while True:
            after = scrape(client)
            key = ("ctdna_webhook_attempts_total", (("outcome", "network_error"),))
            if after.get(key, 0) > before.get(key, 0) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        admin.delete(f"/v1/webhook-endpoints/{endpoint.json()['id']}")

    def grew(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert after[("ctdna_metrics_database_up", ())] == 1
    assert grew("ctdna_jobs_finished_total", (("outcome", "succeeded"), *ingest)) >= 1
    assert grew("ctdna_jobs_finished_total", (("outcome", "failed"), *ingest)) >= 1
    assert after[("ctdna_jobs_failed_last_hour", ingest)] >= 1
    assert grew("ctdna_job_attempts_total", ingest) >= 2
    assert grew("ctdna_ingest_duration_seconds_count") >= 2
    assert (
        after[("ctdna_ingest_duration_seconds_bucket", (("le", "+Inf"),))]
        == after[("ctdna_ingest_duration_seconds_count", ())]
    )
    # panel files take well under 10 s from claim to finish
    assert grew("ctdna_ingest_duration_seconds_bucket", (("le", "10.0"),)) >= 2
    assert after[("ctdna_ingest_duration_seconds_sum", ())] > 0
    assert ("ctdna_queue_depth", (("status", "queued"), *ingest)) in after
    assert ("ctdna_queue_depth", (("status", "running"), *ingest)) in after
    assert ("ctdna_oldest_queued_job_age_seconds", ()) in after
    assert grew("ctdna_webhook_attempts_total", (("outcome", "network_error"),)) >= 1
    assert after[("ctdna_webhook_attempts_failed_last_hour", ())] >= 1
    assert ("ctdna_webhook_deliveries", (("status", "pending"),)) in after
    # the HTTP metrics of the API process itself are still there
    assert any(name == "ctdna_http_requests_total" for name, _ in after)


def test_http_metrics_count_every_worker_process_by_route_template(stack: Stack) -> None:
    """`ctdna serve --workers 2`: requests are counted by route template, method and status,
    with a latency histogram, and every scrape sums both processes, whichever one answers."""
    api, base = start_api(stack.env, stack.tmp, "--no-worker", "--workers", "2")
    try:
        metrics_dir = stack.tmp / "prometheus" / str(api.popen.pid)
        with stack.client(base=base) as client:
            assert client.post("/v1/patients", json={"patient_id": "P-http-1"}).status_code == 201
        # a new connection each time, so that both processes take some of them
        reads = [
            httpx.get(
                f"{base}/v1/patients/{patient}",
                headers={"Authorization": f"Bearer {stack.key}"},
                timeout=30,
            ).status_code
            for patient in ["P-http-1", "P-http-2"] * 20
        ]
        assert reads == [200, 404] * 20
        for _ in range(2):
            assert httpx.get(f"{base}/v1/no-such-route", timeout=30).status_code == 404
        route = (("method", "GET"), ("route", "/v1/patients/{patient_id}"))
        # a file per process (written from its start)
        assert len(list(metrics_dir.glob("counter_*.db"))) >= 2, "not two processes writing"
        for _ in range(6):
            samples = scrape(httpx.Client(base_url=base, timeout=30))
            assert samples[("ctdna_http_requests_total", (*route, ("status", "200")))] == 20
            assert samples[("ctdna_http_requests_total", (*route, ("status", "404")))] == 20
            assert samples[("ctdna_http_request_seconds_count", route)] == 40
            assert samples[("ctdna_http_request_seconds_bucket", (("le", "+Inf"), *route))] == 40
            assert samples[("ctdna_http_request_seconds_sum", route)] > 0
            unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
            assert samples[("ctdna_http_requests_total", unmatched)] == 2
            assert not [
                labels for _, labels in samples if ("route", "/v1/patients/P-http-1") in labels
            ]
            # the background work is there too, read from the database
            assert samples[("ctdna_metrics_database_up", ())] == 1
    finally:
        api.stop()
    assert not metrics_dir.exists()  # removed when `ctdna serve` ends


# --- rate limits -------------------------------------------------------------------------------


def test_local_bucket_refills_at_its_rate() -> None:
    buckets, limit = LocalBuckets(max_keys=2), Limit("uploads", rate=2, burst=3)
    assert [buckets.take("k", limit, 100.0).allowed for _ in range(4)] == [True] * 3 + [False]
    refused = buckets.take("k", limit, 100.0)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    assert buckets.take("k", limit, 100.5).allowed
    assert not buckets.take("k", limit, 100.5).allowed
    # the least recently used bucket is forgotten past max_keys (and starts full again)
    buckets.take("a", limit, 100.5)
    buckets.take("b", limit, 100.5)
    assert buckets.take("k", limit, 100.5).allowed


def test_a_lease_is_spent_once_and_expires() -> None:
    leases = Leases(max_keys=1)
    leases.keep("k", 2, expires=10.0)
    assert [leases.spend("k", 5.0) for _ in range(3)] == [True, True, False]
    leases.keep("k", 5, expires=10.0)
    assert not leases.spend("k", 10.0)  # expired: its tokens are not spent
    leases.keep("a", 1, expires=10.0)
    leases.keep("b", 1, expires=10.0)  # past max_keys the oldest lease is dropped
    assert not leases.spend("a", 5.0) and leases.spend("b", 5.0)


def test_leased_tokens_never_exceed_the_shared_budget(redis_url: str) -> None:
    """Two processes' limiters on one Redis bucket (burst 100: leases of 5 tokens), alternating:
    exactly the burst is allowed in all, however the leases fall."""
    limit = Limit("reads", rate=0.001, burst=100)
    allowed: list[int] = []

    async def app(scope: object, receive: object, send: object) -> None:
        allowed.append(1)

    async def send(message: object) -> None:
        return None

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    async def flood() -> list[RateLimit]:
        limiters = [
            RateLimit(app, uploads=limit, reads=limit, redis_url=redis_url) for _ in range(2)
        ]
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/v1/patients",
            # no key: the client address's bucket (an unknown key would spend it too)
            "headers": [],
            "client": ("192.0.2.7", 40000),
        }
        # 60 at once in one process: one lease request at a time, so none is refused (if each
        # took a lease of its own, 20 would drain the bucket and 40 be refused)
        async with anyio.create_task_group() as group:
            for _ in range(60):
                group.start_soon(limiters[0], scope, receive, send)
        assert len(allowed) == 60
        for i in range(150):
            await limiters[i % 2](scope, receive, send)
        return limiters

    limiters = anyio.run(flood)
    assert len(allowed) == limit.burst
    assert all(limiter._redis_down_until == 0.0 for limiter in limiters)  # Redis answered


def test_upload_flood_is_limited_per_key_across_processes(stack: Stack, pg_url: str) -> None:
    key = create_key(stack.env, "site-flood")
    patient = "P-flood"
    attempts = 60

    def attempt(i: int) -> tuple[str, int, httpx.Response]:
        sample_id = f"S-flood-{i:03d}"
        with stack.client(key, stack.limited[i % 2]) as client:
            return sample_id, i, upload_panel(client, stack.tmp, patient, sample_id)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(attempts)))
    elapsed = time.monotonic() - started

    accepted = [(s, r.json()) for s, _, r in results if r.status_code == 202]
    limited = [(s, r) for s, _, r in results if r.status_code == 429]
    assert len(accepted) + len(limited) == attempts, {r.status_code for _, _, r in results}
    # one budget for the key, shared by both API processes through Redis
    assert UPLOAD_BURST <= len(accepted) <= UPLOAD_BURST + UPLOAD_RATE * elapsed + 2
    assert limited
    for _, response in limited:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["status"] == 429

    # every accepted upload is processed; no refused one left a row behind
    with stack.client(key, stack.base) as client:
        for _, body in accepted:
            assert wait_job(client, body["job_id"])["status"] == "succeeded"
    engine = create_engine(pg_url)
    with Session(engine) as session:
        stored = set(
            session.scalars(select(Sample.sample_id).where(Sample.site == "site-flood")).all()
        )
        statuses = session.execute(
            select(Job.status, func.count())
            .join(Sample, Sample.id == Job.sample_pk)
            .where(Sample.site == "site-flood")
            .group_by(Job.status)
        ).all()
    engine.dispose()
    assert stored == {s for s, _ in accepted}
    assert dict(statuses) == {"succeeded": len(accepted)}

    # another key has its own budget; reads are limited too, on their own bucket
    with stack.client(stack.key, stack.limited[0]) as other:
        assert upload_panel(other, stack.tmp, "P-flood-other", "S-flood-other").status_code == 202
        codes = [other.get("/v1/patients").status_code for _ in range(40)]
    assert codes[:20] == [200] * 20 and 429 in codes
    # unlimited routes stay open
    assert httpx.get(f"{stack.limited[0]}/healthz").status_code == 200


def test_requests_without_a_key_spend_a_budget_per_address(stack: Stack) -> None:
    # each refused request for patient data is an audit row: an anonymous flood is bounded
    with httpx.Client(base_url=stack.limited[1], timeout=30) as anonymous:
        codes = [anonymous.get("/v1/patients/P-anon").status_code for _ in range(40)]
    assert codes[:20] == [401] * 20 and 429 in codes and set(codes) == {401, 429}


# --- Idempotency-Key ---------------------------------------------------------------------------


def test_idempotent_posts_replay_without_repeating(stack: Stack) -> None:
    with stack.client() as client, stack.client(stack.admin) as admin:
        key = {"Idempotency-Key": str(uuid.uuid4())}
        first = client.post("/v1/patients", json={"patient_id": "P-idem"}, headers=key)
        again = client.post("/v1/patients", json={"patient_id": "P-idem"}, headers=key)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        # without the header the same request is a new one, and a conflict
        assert client.post("/v1/patients", json={"patient_id": "P-idem"}).status_code == 409

        # the same key with another body is refused
        other = client.post("/v1/patients", json={"patient_id": "P-idem-2"}, headers=key)
        assert other.status_code == 422
        assert other.headers["content-type"].startswith("application/problem+json")
        assert client.get("/v1/patients/P-idem-2").status_code == 404

        event = {"type": "therapy_start", "date": "2025-03-01", "drug": "letrozole"}
        event_key = {"Idempotency-Key": f'"{uuid.uuid4()}"'}  # the structured-field form
        responses = [
            client.post("/v1/patients/P-idem/events", json=event, headers=event_key)
            for _ in range(3)
        ]
        assert {r.status_code for r in responses} == {201}
        assert len({r.json()["id"] for r in responses}) == 1
        assert len(client.get("/v1/patients/P-idem").json()["events"]) == 1

        hook = {"url": "http://127.0.0.1:9/hook", "events": ["sample.failed"]}
        hook_key = {"Idempotency-Key": str(uuid.uuid4())}
        created = [admin.post("/v1/webhook-endpoints", json=hook, headers=hook_key) for _ in "ab"]
        # the replay names the endpoint made the first time, and never shows its secret again
        assert [r.status_code for r in created] == [201, 409]
        assert created[1].headers["idempotent-replayed"] == "true"
        assert created[1].json()["resource"]["id"] == created[0].json()["id"]
        assert created[0].json()["secret"] not in created[1].text
        urls = [e["url"] for e in admin.get("/v1/webhook-endpoints").json()["items"]]
        assert urls.count(hook["url"]) == 1
        admin.delete(f"/v1/webhook-endpoints/{created[0].json()['id']}")

        # an error answer is kept and replayed too (the request is not run again)
        clash_key = {"Idempotency-Key": str(uuid.uuid4())}
        clash = [
            client.post("/v1/patients", json={"patient_id": "P-idem"}, headers=clash_key)
            for _ in "ab"
        ]
        assert [r.status_code for r in clash] == [409, 409]
        assert clash[1].headers["idempotent-replayed"] == "true"

        # keys are per API key: another key's identical request is its own
        replay_elsewhere = admin.post("/v1/patients", json={"patient_id": "P-idem"}, headers=key)
        assert replay_elsewhere.status_code == 409
        assert "idempotent-replayed" not in replay_elsewhere.headers

        too_long = {"Idempotency-Key": "x" * 300}
        bad = client.post("/v1/patients", json={"patient_id": "P-idem-3"}, headers=too_long)
        assert bad.status_code == 400
        assert client.get("/v1/patients/P-idem-3").status_code == 404


def test_idempotency_states_on_the_database(pg_url: str) -> None:
    engine = create_engine(pg_url)
    now = dt.datetime.now(dt.UTC)
    ttl = dt.timedelta(hours=24)
    common = {"key_id": "k-" + uuid.uuid4().hex[:8], "idempotency_key": "abc", "ttl": ttl}
    request = {"method": "POST", "path": "/v1/patients", "fingerprint": "f" * 64}

    def begin(at: dt.datetime, **changes: str) -> str:
        with Session(engine) as session, session.begin():
            return idempotency.begin(session, **common, **{**request, **changes}, now=at).outcome

    try:
        assert begin(now) == "started"
        assert begin(now) == "in_flight"
        assert begin(now, fingerprint="0" * 64) == "mismatch"
        # a request that never recorded its answer (its process died) is taken over
        assert begin(now + idempotency.IN_FLIGHT_STALE * 2) == "started"
        with Session(engine) as session, session.begin():
            idempotency.complete(
                session,
                key_id=common["key_id"],
                idempotency_key="abc",
                status_code=201,
                content_type="application/json",
                body=b"{}",
                now=now,
            )
        assert begin(now) == "replay"
        # after the window the key is new again
        assert begin(now + ttl * 2) == "started"
    finally:
        engine.dispose()
