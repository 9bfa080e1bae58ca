"""The embedded default: no PostgreSQL, no Redis. `ctdna serve` alone runs the API on SQLite
and a real Celery worker on the filesystem broker, and an upload is processed end to end."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import create_key, service_env, start_api, wait_job


def test_embedded_serve_processes_an_upload(tmp_path: Path, public_data: Path) -> None:
    env = service_env(tmp_path / "data")
    api, base = start_api(env, tmp_path)
    try:
        key = create_key(env, "site-embedded", "ingest,read")
        path = public_data / "vcf" / "pcgr_T001-BRCA.grch38.vcf.gz"
        with (
            httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as client,
            path.open("rb") as fh,
        ):
            response = client.post(
                "/v1/samples",
                data={
                    "patient_id": "P-emb",
                    "create_patient": "true",
                    "sample_id": "S-emb",
                    "sample_type": "plasma",
                    "collection_date": "2025-02-01",
                    "genome_build": "GRCh38",
                },
                files={"file": (path.name, fh)},
            )
            assert response.status_code == 202, response.text
            job = wait_job(client, response.json()["job_id"], timeout=90)
            assert job["status"] == "succeeded", (job, api.output()[-3000:])
            variants = client.get("/v1/samples/S-emb/variants").json()["items"]
            assert any(v["protein_change"] == "p.H1047R" and v["alt_reads"] == 31 for v in variants)
            assert client.get("/readyz").status_code == 200
            # the database-derived metrics work on SQLite too
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(client.get("/metrics").text)
                for s in family.samples
            }
            assert samples[("ctdna_metrics_database_up", ())] == 1
            finished = (("outcome", "succeeded"), ("task", "samples.ingest"))
            assert samples[("ctdna_jobs_finished_total", finished)] == 1
            assert samples[("ctdna_ingest_duration_seconds_count", ())] == 1
            assert 0 < samples[("ctdna_ingest_duration_seconds_sum", ())] < 60
        assert (tmp_path / "data" / "ctdna.db").exists()
    finally:
        api.stop()
