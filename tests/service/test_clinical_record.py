"""Results as a clinical record, over HTTP on the real stack (PostgreSQL, Redis, a Celery
worker, a webhook receiver): an issued call that a new normal changes is amended (its original
value kept, `result.amended` delivered once); corrections and retractions are audited and
recompute what they affect; dates that cannot be true, unknown patients and the same bytes
under another sample id are refused at the door; a drug name with `$` renders everywhere."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    PANEL_VCF,
    Receiver,
    Running,
    background_vcf,
    create_keys,
    panel_vcf,
    service_env,
    start_receiver,
    wait_job,
)

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

# Both loci carry mutant reads in the panel file's TUMOR column (40/1600 and 120/2000), none
# in its NORMAL column: a plasma draw read from TUMOR is positive against a clean background.
TRACKED = ["chr3:179218303:G>A", "chr6:152098788:A>C"]
# Two PIK3CA loci that no other sample of the site reports (the panel file posted for other
# patients carries real mutations at TRACKED: four such plasmas make those loci noisy ones).
QUIET = ["chr3:179200001:A>C", "chr3:179210001:A>C"]
SURGERY = "2025-01-02"


@dataclass
class Stack:
    client: httpx.Client
    admin: httpx.Client
    other: httpx.Client
    receiver: Receiver
    endpoint_id: str
    tmp: Path


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("record")
    env = service_env(
        tmp,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )
    receiver = start_receiver(tmp)
    with Running() as running:
        running.processes.append(receiver.process)
        running.worker(env, tmp, "--concurrency", "2")
        (base,) = running.apis(tmp, env)
        keys = create_keys(
            env,
            ("site-rec", "ingest,read"),
            ("site-rec", "read,admin"),
            ("other-rec", "ingest,read"),
        )
        clients = [
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {k}"}, timeout=60)
            for k in keys
        ]
        endpoint = clients[1].post(
            "/v1/webhook-endpoints", json={"url": receiver.url, "events": ["result.amended"]}
        )
        assert endpoint.status_code == 201, endpoint.text
        # The site's assay needs a background before its draws can be called.
        pon = background_vcf(tmp, "PON-1")
        processed(
            clients[0],
            upload(
                clients[0],
                tmp,
                "PON",
                "PON-1",
                sample_type="normal",
                path=pon,
                create_patient="true",
            ),
        )
        receiver.set(secret=endpoint.json()["secret"])
        yield Stack(*clients, receiver, endpoint.json()["id"], tmp)
        for client in clients:
            client.close()


def upload(
    client: httpx.Client,
    tmp: Path,
    patient_id: str,
    sample_id: str,
    *,
    date: str = "2025-03-01",
    sample_type: str = "plasma",
    path: Path | None = None,
    **extra: str,
) -> httpx.Response:
    path = path or panel_vcf(tmp, sample_id)
    with path.open("rb") as fh:
        return client.post(
            "/v1/samples",
            data={
                "patient_id": patient_id,
                "sample_id": sample_id,
                "collection_date": date,
                "sample_type": sample_type,
                "genome_build": "GRCh38",
                "tumor_sample": "TUMOR",
                "normal_sample": "NORMAL",
                **extra,
            },
            files={"file": (path.name, fh)},
        )


def two_loci_vcf(
    directory: Path,
    name: str,
    alt: tuple[int, int],
    depth: int,
    loci: list[str] = TRACKED,
) -> Path:
    """A deep VCF at two loci (the tracked ones by default): `alt` mutant reads of `depth` in
    its TUMOR column, none in its NORMAL column (deep enough to be informative: > 20,000
    reads)."""
    lines = PANEL_VCF.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    records = []
    for key, mutant in zip(loci, alt, strict=True):
        chrom, pos, change = key.split(":")
        ref, variant = change.split(">")
        records.append(
            f"{chrom}\t{pos}\t.\t{ref}\t{variant}\t.\tPASS\tDP={2 * depth}\tGT:AD:AF:DP"
            f"\t0/0:{depth},0:0.0:{depth}"
            f"\t0/1:{depth - mutant},{mutant}:{mutant / depth:.5f}:{depth}"
        )
    path = directory / f"{name}.vcf"
    path.write_text("\n".join([header[0], f"##ctdna_test={name}", *header[1:], *records]) + "\n")
    return path


def processed(client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 202), response.text
    job = wait_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


def monitored_patient(stack: Stack, patient_id: str, loci: list[str] = TRACKED) -> None:
    """A patient after surgery, tracking two loci (the module's TRACKED by default)."""
    client = stack.client
    assert client.post("/v1/patients", json={"patient_id": patient_id}).status_code == 201
    event = client.post(
        f"/v1/patients/{patient_id}/events", json={"type": "surgery", "date": SURGERY}
    )
    assert event.status_code == 201, event.text
    tracked = client.put(
        f"/v1/patients/{patient_id}/tracked-variants",
        json={"variants": [{"locus_key": k, "tumor_af": 0.3} for k in loci]},
    )
    assert tracked.status_code == 200, tracked.text


def audit_details(stack: Stack, patient_id: str) -> list[dict[str, Any]]:
    rows = stack.admin.get("/v1/audit", params={"patient_id": patient_id, "limit": 500}).json()
    return [r for r in rows["items"] if r["detail"]]


def amended_deliveries(stack: Stack, patient_id: str) -> list[dict[str, Any]]:
    """The endpoint's deliveries of result.amended events about the patient (rows written in
    the transaction of the recompute that amended: nothing to wait for)."""
    items = stack.admin.get(
        f"/v1/webhook-endpoints/{stack.endpoint_id}/deliveries", params={"limit": 200}
    ).json()["items"]
    seen = {
        r["webhook_id"]: r["body"]["data"]
        for r in stack.receiver.seen()
        if r["body"]["type"] == "result.amended"
    }
    return [
        {**d, "data": seen.get(d["event_id"])}
        for d in items
        if d["event_type"] == "result.amended"
        and (seen.get(d["event_id"]) or {}).get("patient_id", patient_id) == patient_id
    ]


def wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


# --- refused at the door ------------------------------------------------------------------------


def test_an_unknown_patient_is_a_404_unless_asked_to_create_it(stack: Stack) -> None:
    client = stack.client
    refused = upload(client, stack.tmp, "TYPO-1", "TYPO-1-P1")
    assert refused.status_code == 404, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "'TYPO-1'" in refused.json()["detail"]
    assert client.get("/v1/patients/TYPO-1").status_code == 404  # nothing was created
    assert (
        upload(client, stack.tmp, "TYPO-1", "TYPO-1-P1", create_patient="false").status_code == 404
    )

    created = upload(client, stack.tmp, "NEW-1", "NEW-1-P1", create_patient="true")
    assert created.status_code == 202, created.text
    assert client.get("/v1/patients/NEW-1").status_code == 200

    # A site may make creation the default (pipelines that post before anyone registers the
    # patient); an upload can still refuse it.
    assert (
        stack.client.put("/v1/site-settings", json={"create_patients_on_upload": True}).status_code
        == 403
    )
    settings = stack.admin.put("/v1/site-settings", json={"create_patients_on_upload": True})
    assert settings.status_code == 200 and settings.json()["create_patients_on_upload"], (
        settings.text
    )
    try:
        assert (
            upload(client, stack.tmp, "NEW-2", "NEW-2-P1", create_patient="false").status_code
            == 404
        )
        assert upload(client, stack.tmp, "NEW-2", "NEW-2-P1").status_code == 202
    finally:
        stack.admin.put("/v1/site-settings", json={"create_patients_on_upload": False})
    assert upload(client, stack.tmp, "NEW-3", "NEW-3-P1").status_code == 404


def test_dates_that_cannot_be_true_are_422(stack: Stack) -> None:
    client = stack.client
    assert client.post("/v1/patients", json={"patient_id": "DATE-1"}).status_code == 201
    today = dt.date.fromisoformat(client.get("/v1/site-settings").json()["today"])
    for date in ((today + dt.timedelta(days=2)).isoformat(), "2031-04-01", "1989-12-31"):
        refused = upload(client, stack.tmp, "DATE-1", f"DATE-1-{date}", date=date)
        assert refused.status_code == 422, (date, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert date in refused.json()["detail"]
    # tomorrow passes: a lab a few hours ahead of the site is not wrong
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    assert upload(client, stack.tmp, "DATE-1", "DATE-1-ok", date=tomorrow).status_code == 202
    future = {"type": "surgery", "date": (today + dt.timedelta(days=30)).isoformat()}
    response = client.post("/v1/patients/DATE-1/events", json=future)
    assert response.status_code == 422, response.text
    assert client.get("/v1/patients/DATE-1").json()["events"] == []
    # in the site's time zone: where it is already tomorrow, the day after passes
    zone = stack.admin.put("/v1/site-settings", json={"timezone": "Pacific/Kiritimati"})
    assert zone.status_code == 200, zone.text
    try:
        ahead = dt.date.fromisoformat(zone.json()["today"])
        late = (ahead + dt.timedelta(days=1)).isoformat()
        assert upload(client, stack.tmp, "DATE-1", "DATE-1-late", date=late).status_code == 202
        assert (
            stack.admin.put("/v1/site-settings", json={"timezone": "Mars/Olympus"}).status_code
            == 422
        )
    finally:
        stack.admin.put("/v1/site-settings", json={"timezone": "UTC"})


def test_the_same_bytes_under_another_sample_id_is_a_409_naming_the_sample(stack: Stack) -> None:
    client = stack.client
    assert client.post("/v1/patients", json={"patient_id": "DUP-1"}).status_code == 201
    path = panel_vcf(stack.tmp, "DUP-1-bytes")
    first = upload(client, stack.tmp, "DUP-1", "DUP-1-P1", path=path)
    assert first.status_code == 202, first.text
    again = upload(client, stack.tmp, "DUP-1", "DUP-1-P1", path=path)
    assert again.status_code == 200 and again.json() == first.json()
    other = upload(client, stack.tmp, "DUP-1", "DUP-1-P2", path=path, date="2025-04-01")
    assert other.status_code == 409, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    assert "'DUP-1-P1'" in other.json()["detail"]
    assert client.get("/v1/samples/DUP-1-P2").status_code == 404
    assert client.get("/v1/samples/DUP-1-P1").json()["collection_date"] == "2025-03-01"


# --- reported means frozen ----------------------------------------------------------------------


def test_a_call_changed_by_a_new_normal_keeps_its_original_and_is_amended_once(
    stack: Stack,
) -> None:
    client = stack.client
    monitored_patient(stack, "AM-1", QUIET)
    deep = two_loci_vcf(stack.tmp, "AM-1-P1", (40, 60), 15000, QUIET)
    processed(client, upload(client, stack.tmp, "AM-1", "AM-1-P1", path=deep))
    issued = client.get("/v1/patients/AM-1/mrd").json()
    (call,) = issued["calls"]
    assert call["call"] == "POSITIVE", call
    assert call["amendments"] == [] and issued["amendments"] == []

    # A normal of the same patient with the same mutant reads at both loci: they are noise of
    # this assay, not tumour DNA, and the positive call cannot stand.
    noisy = two_loci_vcf(stack.tmp, "AM-1-N1", (40, 60), 15000, QUIET)
    processed(
        client, upload(client, stack.tmp, "AM-1", "AM-1-N1", sample_type="normal", path=noisy)
    )
    mrd = client.get("/v1/patients/AM-1/mrd").json()
    (call,) = mrd["calls"]
    assert call["call"] != "POSITIVE", call
    (amendment,) = call["amendments"]
    assert amendment["field"] == "call" and amendment["sample_id"] == "AM-1-P1"
    assert amendment["previous"]["call"] == "POSITIVE"
    assert amendment["previous"]["score"] == issued["calls"][0]["score"]  # the whole issued call
    assert amendment["current"]["call"] == call["call"]
    assert "AM-1-N1" in amendment["reason"]
    assert amendment["method_version"] and amendment["amended_at"]
    assert amendment in mrd["amendments"]
    record = client.get("/v1/patients/AM-1/amendments").json()["items"]
    assert [a["id"] for a in record if a["field"] == "call"] == [amendment["id"]]

    wait_for(lambda: any(d["data"] for d in amended_deliveries(stack, "AM-1")), "no delivery")
    (delivery,) = amended_deliveries(stack, "AM-1")
    data = delivery["data"]
    assert data["patient_id"] == "AM-1" and "AM-1-N1" in data["reason"]
    items = {(i["field"], i["sample_id"]): i for i in data["amendments"]}
    assert items[("call", "AM-1-P1")]["previous_value"] == "POSITIVE"
    assert items[("call", "AM-1-P1")]["current_value"] == call["call"]

    # Recomputing the same data amends nothing more and announces nothing more.
    job = client.post("/v1/patients/AM-1/recompute").json()
    assert wait_job(client, job["job_id"])["status"] == "succeeded"
    again = client.get("/v1/patients/AM-1/mrd").json()
    assert again["calls"] == mrd["calls"]
    assert len(amended_deliveries(stack, "AM-1")) == 1
    assert len(client.get("/v1/patients/AM-1/amendments").json()["items"]) == len(record)


def test_an_issued_call_that_keeps_its_value_stays_exactly_as_issued(stack: Stack) -> None:
    client = stack.client
    monitored_patient(stack, "AM-2")
    processed(client, upload(client, stack.tmp, "AM-2", "AM-2-P1"))
    (issued,) = client.get("/v1/patients/AM-2/mrd").json()["calls"]
    # A later draw moves every background a little; the first call's value does not change.
    processed(client, upload(client, stack.tmp, "AM-2", "AM-2-P2", date="2025-04-01"))
    first, second = client.get("/v1/patients/AM-2/mrd").json()["calls"]
    assert first == issued
    assert second["sample_id"] == "AM-2-P2"
    assert client.get("/v1/patients/AM-2/amendments").json()["items"] == []


# --- corrections --------------------------------------------------------------------------------


def test_a_retracted_sample_leaves_every_analysis_and_is_on_the_audit_trail(stack: Stack) -> None:
    client = stack.client
    monitored_patient(stack, "RT-1")
    processed(client, upload(client, stack.tmp, "RT-1", "RT-1-P1"))
    processed(client, upload(client, stack.tmp, "RT-1", "RT-1-P2", date="2025-04-01"))
    assert [c["sample_id"] for c in client.get("/v1/patients/RT-1/mrd").json()["calls"]] == [
        "RT-1-P1",
        "RT-1-P2",
    ]
    assert client.post("/v1/samples/RT-1-P2/retract", json={}).status_code == 422  # a reason
    response = client.post("/v1/samples/RT-1-P2/retract", json={"reason": "wrong patient"})
    assert response.status_code == 200, response.text
    sample = response.json()
    assert sample["status"] == "retracted" and sample["retraction_reason"] == "wrong patient"

    mrd = client.get("/v1/patients/RT-1/mrd").json()
    assert [c["sample_id"] for c in mrd["calls"]] == ["RT-1-P1"]
    trends = client.get("/v1/patients/RT-1/trends").json()
    assert [s["sample_id"] for s in trends["samples"]] == ["RT-1-P1"]
    assert all(p["sample_id"] == "RT-1-P1" for v in trends["variants"] for p in v["points"]), (
        trends["variants"]
    )
    page = client.get("/ui/patients/RT-1").text
    calls_table = page.split('id="mrd-calls"')[1].split("</table>")[0]
    assert "RT-1-P1" in calls_table and "RT-1-P2" not in calls_table
    timeline = page.split('id="timeline-figure">')[1].split("</script>")[0]
    assert "RT-1-P2" not in timeline
    samples_table = page.split('id="samples-table"')[1].split("</table>")[0]
    row = samples_table.split("RT-1-P2")[1].split("</tr>")[0]
    assert "retracted" in row and "wrong patient" in row
    assert "1 plasma draw" in page  # the retracted draw is not counted

    # still readable, as retracted, with its retraction on record
    read = client.get("/v1/samples/RT-1-P2").json()
    assert read["status"] == "retracted"
    assert [c["action"] for c in read["corrections"]] == ["sample.retracted"]
    assert client.get("/v1/samples/RT-1-P2/variants").json()["items"] == []
    (row,) = [r for r in audit_details(stack, "RT-1") if r["sample_id"] == "RT-1-P2"]
    assert row["route"] == "/v1/samples/{sample_id}/retract"
    assert row["detail"] == {"action": "sample.retracted", "reason": "wrong patient"}
    # the issued call it had is withdrawn, on record
    withdrawn = [
        a
        for a in client.get("/v1/patients/RT-1/amendments").json()["items"]
        if a["sample_id"] == "RT-1-P2"
    ]
    assert [(a["field"], a["current"]) for a in withdrawn] == [("call", None)]
    assert "wrong patient" in withdrawn[0]["reason"]

    again = client.post("/v1/samples/RT-1-P2/retract", json={"reason": "twice"})
    assert again.status_code == 200 and again.json()["retraction_reason"] == "wrong patient"
    assert len([r for r in audit_details(stack, "RT-1") if r["sample_id"] == "RT-1-P2"]) == 1
    refused = client.patch("/v1/samples/RT-1-P2", json={"plasma_ml": 2, "reason": "x"})
    assert refused.status_code == 409, refused.text


def test_a_corrected_collection_date_reorders_the_series(stack: Stack) -> None:
    client = stack.client
    monitored_patient(stack, "CD-1")
    processed(client, upload(client, stack.tmp, "CD-1", "CD-1-P1", date="2025-03-01"))
    processed(client, upload(client, stack.tmp, "CD-1", "CD-1-P2", date="2025-04-01"))
    issued = {c["sample_id"]: c for c in client.get("/v1/patients/CD-1/mrd").json()["calls"]}

    future = client.patch(
        "/v1/samples/CD-1-P2", json={"collection_date": "2031-01-01", "reason": "typo"}
    )
    assert future.status_code == 422, future.text
    assert (
        client.patch("/v1/samples/CD-1-P2", json={"collection_date": "2025-02-15"}).status_code
        == 422
    )
    response = client.patch(
        "/v1/samples/CD-1-P2",
        json={"collection_date": "2025-02-15", "reason": "day and month swapped by the lab"},
    )
    assert response.status_code == 200, response.text
    sample = response.json()
    assert sample["collection_date"] == "2025-02-15"
    (correction,) = sample["corrections"]
    assert correction["changes"] == {"collection_date": ["2025-04-01", "2025-02-15"]}
    assert correction["reason"] == "day and month swapped by the lab"

    calls = client.get("/v1/patients/CD-1/mrd").json()["calls"]
    assert [(c["sample_id"], c["collection_date"]) for c in calls] == [
        ("CD-1-P2", "2025-02-15"),
        ("CD-1-P1", "2025-03-01"),
    ]
    for call in calls:
        if call["call"] == issued[call["sample_id"]]["call"]:
            # the result stands as issued; only the draw's dates follow the correction
            draw = {"collection_date": None, "days_since_surgery": None}
            assert {**call, **draw} == {**issued[call["sample_id"]], **draw}
    trends = client.get("/v1/patients/CD-1/trends").json()
    assert [s["sample_id"] for s in trends["samples"]] == ["CD-1-P2", "CD-1-P1"]
    (row,) = [r for r in audit_details(stack, "CD-1")]
    assert row["method"] == "PATCH" and row["detail"]["action"] == "sample.corrected"


def test_a_sample_moves_to_another_patient_of_the_site(stack: Stack) -> None:
    client = stack.client
    monitored_patient(stack, "MV-1")
    monitored_patient(stack, "MV-2")
    processed(client, upload(client, stack.tmp, "MV-1", "MV-1-P1"))
    assert [c["sample_id"] for c in client.get("/v1/patients/MV-1/mrd").json()["calls"]] == [
        "MV-1-P1"
    ]
    elsewhere = stack.other.post("/v1/patients", json={"patient_id": "MV-X"})
    assert elsewhere.status_code == 201
    refused = client.patch(
        "/v1/samples/MV-1-P1", json={"patient_id": "MV-X", "reason": "wrong patient"}
    )
    assert refused.status_code == 404, refused.text  # another site's patient does not exist here

    response = client.patch(
        "/v1/samples/MV-1-P1", json={"patient_id": "MV-2", "reason": "wrong patient"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["patient_id"] == "MV-2"
    assert wait_job(client, response.json()["job_id"])["status"] == "succeeded"
    assert client.get("/v1/patients/MV-1/mrd").json()["calls"] == []
    assert [c["sample_id"] for c in client.get("/v1/patients/MV-2/mrd").json()["calls"]] == [
        "MV-1-P1"
    ]
    assert [s["sample_id"] for s in client.get("/v1/patients/MV-2").json()["samples"]] == [
        "MV-1-P1"
    ]
    (row,) = audit_details(stack, "MV-1")
    assert row["detail"]["changes"] == {"patient_id": ["MV-1", "MV-2"]}
    withdrawn = client.get("/v1/patients/MV-1/amendments").json()["items"]
    assert [(a["field"], a["current"]) for a in withdrawn if a["field"] == "call"] == [
        ("call", None)
    ]


def test_events_are_corrected_and_deleted_with_a_reason(stack: Stack) -> None:
    client = stack.client
    monitored_patient(stack, "EV-1")
    processed(client, upload(client, stack.tmp, "EV-1", "EV-1-P1", date="2025-03-01"))
    (surgery,) = client.get("/v1/patients/EV-1").json()["events"]
    assert client.get("/v1/patients/EV-1/mrd").json()["calls"]

    path = f"/v1/patients/EV-1/events/{surgery['id']}"
    assert client.patch(path, json={"date": "2031-01-01", "reason": "typo"}).status_code == 422
    assert client.patch(path, json={"date": "2025-02-20"}).status_code == 422  # no reason
    assert stack.other.patch(path, json={"date": "2025-02-20", "reason": "x"}).status_code == 404
    moved = client.patch(path, json={"date": "2025-02-20", "reason": "operation note re-read"})
    assert moved.status_code == 200 and moved.json()["date"] == "2025-02-20", moved.text
    (call,) = client.get("/v1/patients/EV-1/mrd").json()["calls"]
    assert call["days_since_surgery"] == 9 or call["call"] == "INDETERMINATE"  # < 14 days post-op

    deleted = client.request("DELETE", path, json={"reason": "entered on the wrong patient"})
    assert deleted.status_code == 204, deleted.text
    assert client.get("/v1/patients/EV-1").json()["events"] == []
    mrd = client.get("/v1/patients/EV-1/mrd").json()
    assert mrd["calls"] == []  # no surgery, no MRD call
    record = client.get("/v1/patients/EV-1/amendments").json()["items"]
    assert any(a["field"] == "call" and a["current"] is None for a in record)
    assert any("entered on the wrong patient" in a["reason"] for a in record)
    details = {r["detail"]["action"]: r["detail"] for r in audit_details(stack, "EV-1")}
    assert details["event.corrected"]["changes"] == {"date": ["2025-01-02", "2025-02-20"]}
    assert details["event.deleted"]["event"]["type"] == "surgery"
    assert details["event.deleted"]["reason"] == "entered on the wrong patient"
    assert client.request("DELETE", path, json={"reason": "again"}).status_code == 404


# --- plain text everywhere ----------------------------------------------------------------------


def test_a_drug_name_with_dollar_signs_renders_in_png_svg_and_pdf(stack: Stack) -> None:
    client = stack.client
    drug = r"x$\frac{$y"
    monitored_patient(stack, "TX-1")
    event = {"type": "therapy_start", "date": "2025-02-01", "drug": drug, "drug_class": "other"}
    response = client.post("/v1/patients/TX-1/events", json=event)
    assert response.status_code == 201, response.text
    assert response.json()["drug"] == drug  # stored as given
    processed(client, upload(client, stack.tmp, "TX-1", "TX-1-P1"))
    for fmt, magic in (("png", b"\x89PNG"), ("svg", b"<?xml")):
        image = client.get(f"/v1/patients/TX-1/plots/timeline.{fmt}")
        assert image.status_code == 200, (fmt, image.text[:300])
        assert image.content.startswith(magic)
    pdf = client.get("/v1/patients/TX-1/report.pdf")
    assert pdf.status_code == 200, pdf.text[:300]
    assert pdf.content.startswith(b"%PDF")
    page = client.get("/ui/patients/TX-1")
    assert page.status_code == 200
    figure = json.loads(page.text.split('id="timeline-figure">')[1].split("</script>")[0])
    labels = [a["text"] for a in figure["layout"]["annotations"]]
    assert any(label.startswith(drug) for label in labels), labels


# --- counts -------------------------------------------------------------------------------------


def test_counts_are_of_processed_draws(stack: Stack) -> None:
    client = stack.client
    assert client.post("/v1/patients", json={"patient_id": "CT-1"}).status_code == 201
    processed(client, upload(client, stack.tmp, "CT-1", "CT-1-P1"))
    bad = stack.tmp / "not-a-vcf.vcf"
    bad.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\n1\tnot-a-number\n")
    failed = upload(client, stack.tmp, "CT-1", "CT-1-P2", path=bad, date="2025-04-01")
    assert wait_job(client, failed.json()["job_id"])["status"] == "failed"
    processed(client, upload(client, stack.tmp, "CT-1", "CT-1-P3", date="2025-05-01"))
    client.post("/v1/samples/CT-1-P3/retract", json={"reason": "duplicate draw"})

    listed = {
        p["patient_id"]: p
        for p in client.get("/v1/patients", params={"limit": 500}).json()["items"]
    }
    assert listed["CT-1"]["sample_count"] == 1
    assert listed["CT-1"]["samples_by_status"] == {"processed": 1, "failed": 1, "retracted": 1}
    page = client.get("/ui/patients/CT-1").text
    summary = page.split('class="summary"')[1].split("</div>\n</div>")[0]
    assert "2025-03-01" in summary and "1 plasma draw" in summary
    assert "1 failed" in summary and "1 retracted" in summary
    overview = client.get("/ui/patients", params={"q": "CT-1"}).text
    row = overview.split('data-patient="CT-1"')[1].split("</tr>")[0]
    assert ">1<" in row.replace(" ", "") and "2025-03-01" in row
    csv = client.get("/v1/exports/patients.csv").text.splitlines()
    header = csv[0].split(",")
    (line,) = [r.split(",") for r in csv[1:] if r.startswith("CT-1,")]
    assert line[header.index("samples")] == "1" and line[header.index("last_draw")] == "2025-03-01"
