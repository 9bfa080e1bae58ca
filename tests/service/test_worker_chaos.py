"""Bounded work. A worker SIGKILLed in the middle of an ingest: with the default settings the
job is taken over by a new worker once its lease expires (the sweep puts it back in the queue)
and finishes exactly once, within two minutes, with no duplicate rows. A long honest ingest
renews its lease (heartbeat) and is never taken over. A job whose workers vanish three times
fails with what it was doing, and `sample.failed` says so."""

from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path

import httpx
import pysam
import pytest
from sqlalchemy import create_engine, func, select

from services.samples.models import Sample
from services.variants.models import Variant
from tests.conftest import (
    Process,
    create_key,
    service_env,
    start_api,
    start_receiver,
    start_worker,
    upload_panel,
    wait_job,
)

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

N_RECORDS = 120_000


def big_tissue_vcf(path: Path, n: int) -> None:
    """A tumour VCF large enough that its ingest takes seconds: n PASS SNVs on chr1."""
    rng = random.Random(7)
    header = pysam.VariantHeader()
    header.add_line("##fileformat=VCFv4.2")
    header.add_line("##reference=GRCh38")
    header.add_line("##contig=<ID=chr1,length=248956422>")
    header.add_line('##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">')
    header.add_line('##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">')
    header.add_sample("TUMOR")
    with pysam.VariantFile(str(path), "wz", header=header) as out:
        for i in range(n):
            ref, alt = rng.sample("ACGT", 2)
            rec = out.new_record(
                contig="chr1", start=1_000_000 + i * 10, alleles=(ref, alt), filter="PASS"
            )
            depth = rng.randint(50, 300)
            alt_reads = rng.randint(3, depth // 2)
            rec.samples["TUMOR"]["AD"] = (depth - alt_reads, alt_reads)
            rec.samples["TUMOR"]["DP"] = depth
            out.write(rec)


def upload_tissue(client: httpx.Client, vcf: Path, sample_id: str) -> str:
    with vcf.open("rb") as fh:
        response = client.post(
            "/v1/samples",
            data={
                "patient_id": "P-chaos",
                "create_patient": "true",
                "sample_id": sample_id,
                "sample_type": "tissue",
                "collection_date": "2025-03-01",
                "genome_build": "GRCh38",
            },
            files={"file": (vcf.name, fh)},
        )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def wait_reading(
    client: httpx.Client, job_id: str, worker: Process, attempt: int
) -> dict[str, object]:
    """The job once the given attempt reports reading the file's records."""
    deadline = time.monotonic() + 90
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        progress = str(job.get("progress") or "")
        if job["attempts"] == attempt and progress.startswith("reading line"):
            return job  # type: ignore[no-any-return]
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, (job, worker.output()[-3000:])
        time.sleep(0.05)


def test_sigkill_mid_ingest_finishes_exactly_once_within_two_minutes_by_default(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    vcf = tmp_path / "big_tumour.vcf.gz"
    big_tissue_vcf(vcf, N_RECORDS)
    # The default lease, heartbeat, sweep and resend settings: none is shortened here.
    env = service_env(tmp_path, CTDNA_DATABASE_URL=pg_url, CTDNA_BROKER_URL=redis_url)
    api, base = start_api(env, tmp_path, "--no-worker")
    first = start_worker(env, tmp_path, "--concurrency", "1", "--beat")
    second = None
    try:
        key = create_key(env, "site-chaos")
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            job_id = upload_tissue(client, vcf, "S-chaos")
            wait_reading(client, job_id, first, attempt=1)
            first.kill(9)
            killed = time.monotonic()
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "running", "the ingest must still be in flight when killed"

            second = start_worker(env, tmp_path, "--concurrency", "1", "--beat")
            job = wait_job(client, job_id, timeout=150)
            assert time.monotonic() - killed < 120, "taken over and finished within 2 minutes"
            assert job["status"] == "succeeded", (job, second.output()[-3000:])
            assert job["attempts"] == 2 and job["workers_lost"] == 1, job
            sample = client.get("/v1/samples/S-chaos").json()
        assert sample["variant_count"] == N_RECORDS
        engine = create_engine(pg_url)
        with engine.connect() as conn:
            sample_pk = conn.scalar(select(Sample.id).where(Sample.sample_id == "S-chaos"))
            rows = conn.scalar(select(func.count()).where(Variant.sample_pk == sample_pk))
        engine.dispose()
        assert rows == N_RECORDS
    finally:
        api.stop()
        first.stop()
        if second is not None:
            second.stop()


def test_a_long_honest_ingest_renews_its_lease_and_is_never_taken_over(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    vcf = tmp_path / "big_tumour.vcf.gz"
    big_tissue_vcf(vcf, N_RECORDS)
    # A lease far shorter than the ingest: only the heartbeat keeps the job with its worker,
    # while a second idle worker sweeps every half second, ready to take it over.
    env = service_env(
        tmp_path,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_JOB_LEASE_SECONDS="1.5",
        CTDNA_SWEEP_INTERVAL_SECONDS="0.5",
        CTDNA_JOB_RESEND_AFTER_SECONDS="1",
    )
    api, base = start_api(env, tmp_path, "--no-worker")
    workers = [start_worker(env, tmp_path, "--concurrency", "1", "--beat") for _ in range(2)]
    try:
        key = create_key(env, "site-honest")
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            job_id = upload_tissue(client, vcf, "S-honest")
            job = wait_job(client, job_id, timeout=120)
        assert job["status"] == "succeeded", job
        started = dt.datetime.fromisoformat(str(job["started_at"]))
        finished = dt.datetime.fromisoformat(str(job["finished_at"]))
        assert (finished - started).total_seconds() > 3 * 1.5, "the ingest outlived its lease"
        assert job["attempts"] == 1 and job["workers_lost"] == 0, job
    finally:
        api.stop()
        for worker in workers:
            worker.stop()


def test_a_job_whose_workers_vanish_three_times_fails_with_the_reason_and_alerts(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    vcf = tmp_path / "big_tumour.vcf.gz"
    big_tissue_vcf(vcf, N_RECORDS)
    env = service_env(
        tmp_path,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_JOB_LEASE_SECONDS="1.5",
        CTDNA_SWEEP_INTERVAL_SECONDS="0.5",
        CTDNA_JOB_RESEND_AFTER_SECONDS="1",
        CTDNA_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )
    receiver = start_receiver(tmp_path)
    api, base = start_api(env, tmp_path, "--no-worker")
    workers: list[Process] = []
    try:
        key = create_key(env, "site-lost", "ingest,read,admin")
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            endpoint = client.post(
                "/v1/webhook-endpoints", json={"url": receiver.url, "events": ["sample.failed"]}
            ).json()
            receiver.set(secret=endpoint["secret"])
            job_id = upload_tissue(client, vcf, "S-lost")
            for attempt in (1, 2, 3):
                workers.append(start_worker(env, tmp_path, "--concurrency", "1", "--beat"))
                reading = wait_reading(client, job_id, workers[-1], attempt)
                workers[-1].kill(9)
            workers.append(start_worker(env, tmp_path, "--concurrency", "1", "--beat"))
            job = wait_job(client, job_id, timeout=60)
            assert job["status"] == "failed", job
            assert job["attempts"] == 3 and job["workers_lost"] == 3, job
            error = str(job["error"])
            assert error.startswith("worker lost 3 times while reading line "), error
            assert error.split("while ")[1].split(" (")[0].endswith(f"of {vcf.name}")
            assert str(reading["progress"]).startswith("reading line")
            assert client.get("/v1/samples/S-lost").json()["status"] == "failed"
            deadline = time.monotonic() + 30
            while not (seen := [r for r in receiver.seen() if r["verified"]]):
                assert time.monotonic() < deadline, "sample.failed was not delivered"
                time.sleep(0.1)
        assert seen[0]["body"]["type"] == "sample.failed"
        assert seen[0]["body"]["data"]["error"] == error
    finally:
        api.stop()
        for worker in workers:
            worker.stop()
        receiver.process.stop()


def test_an_ingest_past_its_time_limit_fails_with_the_reason_and_the_worker_lives_on(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    vcf = tmp_path / "big_tumour.vcf.gz"
    big_tissue_vcf(vcf, N_RECORDS)
    env = service_env(
        tmp_path,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_TASK_TIME_LIMIT_SECONDS="2",
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="2",
    )
    api, base = start_api(env, tmp_path, "--no-worker")
    worker = start_worker(env, tmp_path, "--concurrency", "1", "--beat")
    try:
        key = create_key(env, "site-slow")
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            job = wait_job(client, upload_tissue(client, vcf, "S-slow"), timeout=60)
            assert job["status"] == "failed", job
            assert str(job["error"]).startswith("stopped after the 2-second time limit while "), job
            assert job["workers_lost"] == 0
            assert client.get("/v1/samples/S-slow").json()["status"] == "failed"
            # the same worker still takes work
            small = upload_panel(client, tmp_path, "P-chaos", "S-small").json()["job_id"]
            assert wait_job(client, small)["status"] == "succeeded", worker.output()[-3000:]
    finally:
        api.stop()
        worker.stop()
