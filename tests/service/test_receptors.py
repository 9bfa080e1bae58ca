"""Receptor status over HTTP on the real stack (PostgreSQL, an API process): receptor_status
events posted to /events, read back by /receptors with the HER2 category, ER/PR status,
subtype and the primary-vs-metastasis discordance with its cited implication; a bad value is
a 422 naming the field, another site's patient a 404, and the other event types unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import Running, create_keys, service_env

pytestmark = [pytest.mark.postgres]

PATIENT = "REC-001"


@dataclass
class Stack:
    client: httpx.Client
    other: httpx.Client


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("receptors")
    env = service_env(tmp, CTDNA_DATABASE_URL=pg_url, CTDNA_BROKER_URL=redis_url)
    with Running() as running:
        (base,) = running.apis(tmp, env)
        keys = create_keys(
            env, ("site-receptors", "ingest,read"), ("other-receptors", "ingest,read")
        )
        client, other = (
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {k}"}, timeout=60)
            for k in keys
        )
        with client, other:
            created = client.post("/v1/patients", json={"patient_id": PATIENT})
            assert created.status_code == 201, created.text
            yield Stack(client, other)


def post_event(client: httpx.Client, body: dict[str, object]) -> httpx.Response:
    return client.post(f"/v1/patients/{PATIENT}/events", json=body)


def test_primary_and_liver_metastasis_make_a_receptor_history(stack: Stack) -> None:
    primary = post_event(
        stack.client,
        {
            "type": "receptor_status",
            "date": "2021-04-01",
            "specimen": "primary",
            "site": "breast",
            "er": 90,
            "pr": 40,
            "her2_ihc": "1+",
        },
    )
    assert primary.status_code == 201, primary.text
    assert primary.json()["er"] == 90 and primary.json()["her2_ihc"] == "1+"
    metastasis = post_event(
        stack.client,
        {
            "type": "receptor_status",
            "date": "2024-02-10",
            "specimen": "metastasis",
            "site": "liver",
            "er": 0,
            "her2_ihc": "2+",
            "her2_ish": "not_amplified",
        },
    )
    assert metastasis.status_code == 201, metastasis.text

    response = stack.client.get(f"/v1/patients/{PATIENT}/receptors")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["patient_id"] == PATIENT
    assert body["rules_version"] and body["params_version"].startswith("receptors-")
    first, latest = body["events"]
    assert first["event_id"] == primary.json()["id"]
    assert (first["specimen"], first["site"], first["er"], first["pr"]) == (
        "primary",
        "breast",
        90,
        40,
    )
    assert (first["er_status"], first["pr_status"], first["her2_category"]) == (
        "positive",
        "positive",
        "HER2-low",
    )
    assert first["subtype"] == "HR+/HER2-"
    assert first["subtype_label"] == "HR+/HER2- (HER2-low)"
    assert (latest["site"], latest["er_status"], latest["pr_status"]) == (
        "liver",
        "negative",
        "unknown",
    )
    assert latest["her2_category"] == "HER2-low"
    assert latest["subtype_label"] == "triple-negative (HER2-low)"
    (er,) = body["discordance"]  # HER2-low both: no HER2 change; PR not retested
    assert (er["receptor"], er["primary"], er["latest"], er["change"]) == (
        "ER",
        "positive",
        "negative",
        "loss",
    )
    assert "endocrine therapy is unlikely to work" in er["implication"]
    assert any("Schrijver" in c for c in er["citations"])

    # the events list carries them too, the other event types keep their shape
    surgery = post_event(stack.client, {"type": "surgery", "date": "2021-04-15"})
    assert surgery.status_code == 201, surgery.text
    events = stack.client.get(f"/v1/patients/{PATIENT}").json()["events"]
    assert [e["type"] for e in events] == ["receptor_status", "surgery", "receptor_status"]
    assert events[1]["specimen"] is None and events[2]["site"] == "liver"
    check_the_patient_page_and_report(stack)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"specimen": "primary", "her2_ihc": "4+"}, "her2_ihc"),
        ({"specimen": "primary", "er": 120}, "er"),
        ({"specimen": "primary", "pr": "weak"}, "pr"),
        ({"specimen": "biopsy", "er": 10}, "specimen"),
        ({"specimen": "primary", "her2_ish": "amp"}, "her2_ish"),
    ],
)
def test_a_bad_value_is_a_422_naming_the_field(
    stack: Stack, body: dict[str, object], field: str
) -> None:
    response = post_event(stack.client, {"type": "receptor_status", "date": "2022-01-01", **body})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.text


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"type": "receptor_status", "er": 50}, "needs a specimen"),
        ({"type": "receptor_status", "specimen": "primary"}, "at least one of"),
        ({"type": "surgery", "er": 50}, "takes no er"),
    ],
)
def test_receptor_fields_belong_to_receptor_status(
    stack: Stack, body: dict[str, object], words: str
) -> None:
    response = post_event(stack.client, {"date": "2022-01-01", **body})
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]


def test_another_sites_patient_is_not_found(stack: Stack) -> None:
    assert stack.other.get(f"/v1/patients/{PATIENT}/receptors").status_code == 404
    assert stack.client.get("/v1/patients/nobody/receptors").status_code == 404


def test_a_patient_without_receptor_events_has_an_empty_history(stack: Stack) -> None:
    assert stack.other.post("/v1/patients", json={"patient_id": "REC-OTHER"}).status_code == 201
    body = stack.other.get("/v1/patients/REC-OTHER/receptors").json()
    assert (body["events"], body["discordance"]) == ([], [])
    page = stack.other.get("/ui/patients/REC-OTHER")
    assert page.status_code == 200 and 'id="receptor-events"' not in page.text


def test_a_correction_changes_the_history(stack: Stack) -> None:
    stack.other.post("/v1/patients", json={"patient_id": "REC-FIX"})
    path = "/v1/patients/REC-FIX"
    first = {"type": "receptor_status", "specimen": "primary", "her2_ihc": 0, "er": "positive"}
    assert (
        stack.other.post(f"{path}/events", json={**first, "date": "2020-01-01"}).json()["her2_ihc"]
        == "0"
    )
    later = stack.other.post(
        f"{path}/events",
        json={
            "type": "receptor_status",
            "date": "2023-01-01",
            "specimen": "recurrence",
            "her2_ihc": "0",
        },
    ).json()
    assert stack.other.get(f"{path}/receptors").json()["discordance"] == []
    fixed = stack.other.patch(
        f"{path}/events/{later['id']}", json={"reason": "IHC re-read", "her2_ihc": "ultralow"}
    )
    assert fixed.status_code == 200, fixed.text
    (her2,) = stack.other.get(f"{path}/receptors").json()["discordance"]
    assert (her2["change"], her2["rule_id"]) == ("zero_to_ultralow", "her2-zero-to-ultralow")
    assert any("DESTINY-Breast06" in c for c in her2["citations"])
    refused = stack.other.patch(
        f"{path}/events/{later['id']}", json={"reason": "wrong type", "type": "surgery"}
    )
    assert refused.status_code == 422 and "takes no specimen" in refused.json()["detail"]


def check_the_patient_page_and_report(stack: Stack) -> None:
    """The Receptors section of the page and the HTML report: the timeline and the ER loss."""
    for path in (f"/ui/patients/{PATIENT}", f"/ui/patients/{PATIENT}/report"):
        page = stack.client.get(path)
        assert page.status_code == 200, page.text
        table = page.text.split('id="receptor-events"', 1)[1].split("</table>", 1)[0]
        assert "90% (positive)" in table and "IHC 2+, ISH not amplified" in table
        assert "triple-negative (HER2-low)" in table
        discordance = page.text.split('id="receptor-discordance"', 1)[1].split("</table>", 1)[0]
        assert "ER loss" in discordance and "endocrine therapy is unlikely" in discordance
        assert "Schrijver" in discordance
    pdf = stack.client.get(f"/v1/patients/{PATIENT}/report.pdf")  # with its Receptors section
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF"), pdf.text[:300]


def test_the_client_tells_two_receptor_events_of_a_day_apart() -> None:
    from services.clientcli import _same_event, check_event

    recorded = {
        "type": "receptor_status",
        "date": "2024-02-10",
        "specimen": "metastasis",
        "site": "liver",
    }
    body = {
        "type": "receptor_status",
        "date": "2024-02-10",
        "specimen": "metastasis",
        "site": "liver",
    }
    assert check_event(body) == []
    assert _same_event(body, recorded)
    assert not _same_event({**body, "site": "bone"}, recorded)
    assert not _same_event({**body, "specimen": "recurrence"}, recorded)
    assert _same_event(
        {"type": "surgery", "date": "2024-01-01"},
        {"type": "surgery", "date": "2024-01-01", "specimen": None},
    )
