"""A burst of samples of one patient (a run posted at once, or the re-extractions of a new
tracked set) costs one recompute of the patient's analyses, not one per sample, and every job
still ends "succeeded" only once the analyses include its sample. Real PostgreSQL, Redis and
a Celery worker process started after the uploads, so they all wait in the queue."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import Running, create_keys, panel_vcf, service_env, wait_job

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

TRACKED = ["chr3:179218303:G>A", "chr6:152098788:A>C"]
DRAWS = 6


def test_a_burst_of_one_patients_samples_is_analysed_once(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = service_env(tmp_path, CTDNA_DATABASE_URL=pg_url, CTDNA_BROKER_URL=redis_url)
    with Running() as running:
        (base,) = running.apis(tmp_path, env)
        (key,) = create_keys(env, ("site-burst", "ingest,read"))
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})
        assert client.post("/v1/patients", json={"patient_id": "B-1"}).status_code == 201
        client.post("/v1/patients/B-1/events", json={"type": "surgery", "date": "2025-01-02"})
        tracked = {"variants": [{"locus_key": k, "tumor_af": 0.3} for k in TRACKED]}
        assert client.put("/v1/patients/B-1/tracked-variants", json=tracked).status_code == 200
        job_ids = []
        for draw in range(DRAWS):
            path = panel_vcf(tmp_path, f"B-1-P{draw}")
            with path.open("rb") as fh:
                response = client.post(
                    "/v1/samples",
                    data={
                        "patient_id": "B-1",
                        "sample_id": f"B-1-P{draw}",
                        "collection_date": f"2025-{draw + 2:02d}-01",
                        "sample_type": "plasma",
                        "genome_build": "GRCh38",
                        "tumor_sample": "TUMOR",
                        "normal_sample": "NORMAL",
                    },
                    files={"file": (path.name, fh)},
                )
            assert response.status_code == 202, response.text
            job_ids.append(response.json()["job_id"])
        assert {client.get(f"/v1/jobs/{j}").json()["status"] for j in job_ids} == {"queued"}

        worker = running.worker(env, tmp_path, "--concurrency", "1")
        for job_id in job_ids:
            assert wait_job(client, job_id, timeout=120)["status"] == "succeeded"
        mrd = client.get("/v1/patients/B-1/mrd").json()
        trends = client.get("/v1/patients/B-1/trends").json()
        expected = [f"B-1-P{draw}" for draw in range(DRAWS)]
        # every sample whose job succeeded is in the analyses
        assert [c["sample_id"] for c in mrd["calls"]] == expected
        assert [s["sample_id"] for s in trends["samples"]] == expected
        waited = worker.output().count("ingest.awaiting_analysis")
        assert waited >= DRAWS - 2, worker.output()[-3000:]
