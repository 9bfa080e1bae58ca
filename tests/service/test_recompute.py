"""The `patients.recompute` task through the real path (PostgreSQL, Redis, a Celery worker
process): asked for over HTTP, and queued by itself for the patients tracking a locus when a
new background (a normal sample) arrives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import (
    Running,
    create_keys,
    panel_vcf,
    service_env,
    wait_job,
)

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

TRACKED = ["chr3:179218303:G>A", "chr6:152098788:A>C"]
OUTSIDE_GENES = "chr1:1000000:A>G"  # in the panel file, in none of the four genes


def _upload(
    client: httpx.Client, tmp: Path, patient_id: str, sample_id: str, sample_type: str
) -> dict[str, Any]:
    path = panel_vcf(tmp, sample_id)
    with path.open("rb") as fh:
        response = client.post(
            "/v1/samples",
            data={
                "patient_id": patient_id,
                "sample_id": sample_id,
                "collection_date": "2025-03-01",
                "sample_type": sample_type,
                "genome_build": "GRCh38",
                "tumor_sample": "TUMOR",
                "normal_sample": "NORMAL",
            },
            files={"file": (path.name, fh)},
        )
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


def _recompute_jobs(pg_url: str, patient_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        return conn.execute(
            "SELECT j.id, j.status FROM jobs j JOIN patients p ON p.id = j.patient_pk"
            " WHERE j.task = 'patients.recompute' AND p.patient_id = %s",
            (patient_id,),
        ).fetchall()


@pytest.fixture(scope="module")
def service(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, httpx.Client, httpx.Client, Path]]:
    tmp = tmp_path_factory.mktemp("recompute")
    env = service_env(tmp, CTDNA_DATABASE_URL=pg_url, CTDNA_BROKER_URL=redis_url)
    with Running() as running:
        running.worker(env, tmp, "--concurrency", "2")
        (base,) = running.apis(tmp, env)
        keys = create_keys(
            env, ("site-rc", "ingest,read"), ("site-rc", "read"), ("other", "ingest,read")
        )
        clients = [
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {k}"}, timeout=60)
            for k in keys
        ]
        yield clients[0], clients[1], clients[2], tmp
        for client in clients:
            client.close()


def test_a_recompute_asked_over_http_runs_in_the_worker(
    service: tuple[httpx.Client, httpx.Client, httpx.Client, Path],
) -> None:
    client, reader, other, tmp = service
    assert client.post("/v1/patients", json={"patient_id": "RC-1"}).status_code == 201
    client.post("/v1/patients/RC-1/events", json={"type": "surgery", "date": "2025-01-02"})
    response = client.put(
        "/v1/patients/RC-1/tracked-variants",
        json={"variants": [{"locus_key": k, "tumor_af": 0.3} for k in TRACKED]},
    )
    assert response.status_code == 200, response.text
    _upload(client, tmp, "RC-1", "RC-1-P1", "plasma")
    before = client.get("/v1/patients/RC-1/mrd").json()
    assert [c["sample_id"] for c in before["calls"]] == ["RC-1-P1"]

    response = client.post("/v1/patients/RC-1/recompute")
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"])
    assert job["task"] == "patients.recompute" and job["status"] == "succeeded", job
    after = client.get("/v1/patients/RC-1/mrd").json()
    assert after["computed_at"] > before["computed_at"]
    # Same data, same calls: a recompute is reproducible.
    assert [(c["call"], c["score"]) for c in after["calls"]] == [
        (c["call"], c["score"]) for c in before["calls"]
    ]

    assert reader.post("/v1/patients/RC-1/recompute").status_code == 403
    missing = other.post("/v1/patients/RC-1/recompute")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_a_new_normal_sample_recomputes_the_patients_tracking_its_loci(
    service: tuple[httpx.Client, httpx.Client, httpx.Client, Path], pg_url: str
) -> None:
    client, _, other, tmp = service
    for patient_id in ("RC-2", "RC-PON"):
        assert client.post("/v1/patients", json={"patient_id": patient_id}).status_code == 201
    client.post("/v1/patients/RC-2/events", json={"type": "surgery", "date": "2025-01-02"})
    client.put(
        "/v1/patients/RC-2/tracked-variants",
        json={"variants": [{"locus_key": k} for k in [*TRACKED, OUTSIDE_GENES]]},
    )
    _upload(client, tmp, "RC-2", "RC-2-P1", "plasma")
    assert _recompute_jobs(pg_url, "RC-2") == []
    before = client.get("/v1/patients/RC-2/mrd").json()["computed_at"]

    # A normal plasma of another patient (a panel-of-normals donor) reports both loci.
    _upload(client, tmp, "RC-PON", "RC-PON-N1", "normal")
    deadline = time.monotonic() + 60
    while not any(status == "succeeded" for _, status in _recompute_jobs(pg_url, "RC-2")):
        assert time.monotonic() < deadline, _recompute_jobs(pg_url, "RC-2")
        time.sleep(0.2)
    assert client.get("/v1/patients/RC-2/mrd").json()["computed_at"] > before
    # A normal sample is read at every locus the site tracks, not only in the four genes.
    rows = client.get("/v1/samples/RC-PON-N1/variants").json()["items"]
    assert OUTSIDE_GENES in {r["locus_key"] for r in rows}
    # The donor tracks nothing, and another site's patients are never queued.
    assert _recompute_jobs(pg_url, "RC-PON") == []

    other.post("/v1/patients", json={"patient_id": "RC-X"})
    other.put(
        "/v1/patients/RC-X/tracked-variants",
        json={"variants": [{"locus_key": k} for k in TRACKED]},
    )
    _upload(client, tmp, "RC-PON", "RC-PON-N2", "normal")
    assert _recompute_jobs(pg_url, "RC-X") == []
