"""Tumour-informed MRD through the whole service: a simulated cohort with known truth is
written as real VCFs, posted over HTTP (surgery and relapse events, the tissue, then serial
plasma), processed by a real Celery worker, and the /mrd answers are checked against the
truth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from services.genomics.simulate import Cohort, simulate_cohort, write_plasma_vcf, write_tissue_vcf
from tests.conftest import (
    Receiver,
    create_key,
    service_env,
    start_api,
    start_receiver,
    start_worker,
    wait_job,
)

RECEIVER: list[Receiver] = []

pytestmark = [pytest.mark.queue, pytest.mark.postgres]


@pytest.fixture(scope="module")
def loaded(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Cohort]]:
    tmp = tmp_path_factory.mktemp("mrd")
    cohort = simulate_cohort(6, 5, np.random.default_rng(5))
    env = service_env(
        tmp,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )
    RECEIVER[:] = [start_receiver(tmp)]
    receiver = RECEIVER[0]
    worker = start_worker(env, tmp, "--concurrency", "2", "--beat")
    api, base = start_api(env, tmp, "--no-worker")
    key = create_key(env, "site-mrd", "ingest,read,admin")
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    try:
        endpoint = client.post(
            "/v1/webhook-endpoints",
            json={"url": receiver.url, "events": ["mrd.status_changed"]},
        ).json()
        receiver.set(secret=endpoint["secret"])
        for patient in cohort.patients:
            patient_id = patient.patient_id
            assert client.post("/v1/patients", json={"patient_id": patient_id}).status_code == 201
            events = [{"type": "surgery", "date": patient.surgery_date.isoformat()}]
            if patient.clinical_relapse_date:
                events.append(
                    {"type": "clinical_relapse", "date": patient.clinical_relapse_date.isoformat()}
                )
            for event in events:
                response = client.post(f"/v1/patients/{patient_id}/events", json=event)
                assert response.status_code == 201, response.text
            uploads = [
                (
                    write_tissue_vcf(tmp / f"{patient.tissue_sample_id}.vcf.gz", patient),
                    patient.tissue_sample_id,
                    "tissue",
                    patient.surgery_date,
                ),
                *[
                    (
                        write_plasma_vcf(tmp / f"{d.sample_id}.vcf.gz", d, patient),
                        d.sample_id,
                        "plasma",
                        d.collection_date,
                    )
                    for d in patient.draws
                ],
            ]
            for path, sample_id, sample_type, collected in uploads:
                with path.open("rb") as fh:
                    response = client.post(
                        "/v1/samples",
                        data={
                            "patient_id": patient_id,
                            "sample_id": sample_id,
                            "sample_type": sample_type,
                            "collection_date": collected.isoformat(),
                            "plasma_ml": "4",
                            "cfdna_ng_per_ml": "6",
                        },
                        files={"file": (path.name, fh)},
                    )
                assert response.status_code == 202, response.text
                assert wait_job(client, response.json()["job_id"])["status"] == "succeeded"
        yield client, cohort
    finally:
        client.close()
        api.stop()
        worker.stop()
        receiver.process.stop()


def test_tracked_sets_come_from_tissue(loaded: tuple[httpx.Client, Cohort]) -> None:
    client, cohort = loaded
    for patient in cohort.patients:
        items = client.get(f"/v1/patients/{patient.patient_id}/tracked-variants").json()["items"]
        kept = {t["locus_key"] for t in items if t["kept"]}
        truth = {locus.key for locus in patient.loci}
        # the simulated clonal SNVs are recovered; the decoys (germline, CH, subclonal,
        # filtered) are dropped with a reason
        assert len(kept & truth) >= 0.8 * len(truth), patient.patient_id
        assert all(t["reason"] for t in items)


def test_mrd_calls_match_the_truth(loaded: tuple[httpx.Client, Cohort]) -> None:
    client, cohort = loaded
    for patient in cohort.patients:
        mrd = client.get(f"/v1/patients/{patient.patient_id}/mrd").json()
        assert mrd["specificity"] == 0.99 and mrd["threshold_specificity"] == 0.995
        calls = {c["sample_id"]: c for c in mrd["calls"]}
        assert set(calls) == {d.sample_id for d in patient.draws}
        for draw in patient.draws:
            call = calls[draw.sample_id]
            assert call["call"] in ("POSITIVE", "NEGATIVE", "INDETERMINATE")
            assert call["loci_tracked"] >= 1 and call["informative_reads"] > 0
            if call["call"] == "NEGATIVE":
                assert call["lod95"] is not None and 0 < call["lod95"] < 1
            if draw.true_fraction == 0:
                assert call["call"] != "POSITIVE", (patient.patient_id, draw.sample_id)
            if draw.true_fraction >= 1e-2 and draw.days_since_surgery >= 14:
                assert call["call"] == "POSITIVE", (patient.patient_id, draw.sample_id, call)
        if patient.relapsing:
            assert mrd["molecular_relapse_date"] is not None
            assert mrd["lead_time_days"] is not None and mrd["lead_time_days"] >= 0
        else:
            assert mrd["molecular_relapse_date"] is None
            assert mrd["status"] in ("NEGATIVE", "INDETERMINATE")


def test_each_status_change_is_one_verified_webhook(loaded: tuple[httpx.Client, Cohort]) -> None:
    client, cohort = loaded
    deadline = time.monotonic() + 30
    finals = {
        p.patient_id: client.get(f"/v1/patients/{p.patient_id}/mrd").json()["status"]
        for p in cohort.patients
    }
    expected = {pid for pid, status in finals.items() if status != "NOT_APPLICABLE"}

    def received() -> list[dict[str, Any]]:
        return RECEIVER[0].seen()

    def last_status() -> dict[str, str]:
        by_patient: dict[str, str] = {}
        for r in received():
            by_patient[r["body"]["data"]["patient_id"]] = r["body"]["data"]["status"]
        return by_patient

    while time.monotonic() < deadline and last_status() != {p: finals[p] for p in expected}:
        time.sleep(0.2)
    got = received()
    assert got and all(r["verified"] for r in got)
    assert len({r["webhook_id"] for r in got}) == len(got), "one delivery per change"
    assert last_status() == {p: finals[p] for p in expected}
    for patient_id in expected:
        chain = [r["body"]["data"] for r in got if r["body"]["data"]["patient_id"] == patient_id]
        for before, after in zip(chain, chain[1:], strict=False):
            assert after["previous_status"] == before["status"] != after["status"]


def test_trends_clones_and_plots_are_served(loaded: tuple[httpx.Client, Cohort]) -> None:
    client, cohort = loaded
    patient = next(p for p in cohort.patients if p.relapsing)
    trends = client.get(f"/v1/patients/{patient.patient_id}/trends").json()
    assert [s["sample_id"] for s in trends["samples"]] == [d.sample_id for d in patient.draws]
    assert trends["variants"] and all(v["points"] for v in trends["variants"])
    last = trends["samples"][-1]
    truth = patient.draws[-1].true_fraction
    low, high = last["tumor_fraction_ci"]
    assert low <= truth * 3 and high >= truth / 3, (last, truth)
    clones = client.get(f"/v1/patients/{patient.patient_id}/clones").json()
    assert clones["clones"] and all(c["members"] for c in clones["clones"])
    png = client.get(f"/v1/patients/{patient.patient_id}/plots/timeline.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    page = client.get(f"/ui/patients/{patient.patient_id}")
    assert page.status_code == 200 and patient.patient_id in page.text
