"""A worker SIGKILLed in the middle of an ingest: the job is taken over by a new worker once
its lease expires (the sweep re-sends it) and finishes exactly once, with no duplicate rows."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pysam
import pytest
from sqlalchemy import create_engine, func, select

from services.samples.models import Sample
from services.variants.models import Variant
from tests.conftest import create_key, service_env, start_api, start_worker, wait_job

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


def test_sigkill_mid_ingest_finishes_exactly_once(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    vcf = tmp_path / "big_tumour.vcf.gz"
    big_tissue_vcf(vcf, N_RECORDS)
    env = service_env(
        tmp_path,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_JOB_LEASE_SECONDS="4",
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="2",
    )
    api, base = start_api(env, tmp_path, "--no-worker")
    first = start_worker(env, tmp_path, "--concurrency", "1", "--beat")
    second = None
    try:
        key = create_key(env, "site-chaos")
        with (
            httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client,
            vcf.open("rb") as fh,
        ):
            accepted = client.post(
                "/v1/samples",
                data={
                    "patient_id": "P-chaos",
                    "create_patient": "true",
                    "sample_id": "S-chaos",
                    "sample_type": "tissue",
                    "collection_date": "2025-03-01",
                    "genome_build": "GRCh38",
                },
                files={"file": (vcf.name, fh)},
            ).json()
            deadline = time.monotonic() + 60
            while client.get(f"/v1/jobs/{accepted['job_id']}").json()["status"] != "running":
                assert time.monotonic() < deadline, first.output()
                time.sleep(0.05)
            time.sleep(0.5)
            first.kill(9)
            job = client.get(f"/v1/jobs/{accepted['job_id']}").json()
            assert job["status"] == "running", "the ingest must still be in flight when killed"

            second = start_worker(env, tmp_path, "--concurrency", "1", "--beat")
            job = wait_job(client, accepted["job_id"], timeout=180)
            assert job["status"] == "succeeded", (job, second.output()[-3000:])
            assert job["attempts"] >= 2
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
