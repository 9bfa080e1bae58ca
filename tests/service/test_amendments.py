"""The comparison of issued results with newly computed ones (services/analysis/amendments.py)
on PostgreSQL, inside a transaction rolled back after each test: bodies as the analyses store
them, compared generically (new status spellings need no change), each amendment a row and one
`result.amended` event per recompute."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from schemas.webhooks import ResultAmendedV1
from services.alerts.models import WebhookEvent
from services.analysis import amendments
from services.db import utcnow
from services.patients.models import Patient

pytestmark = pytest.mark.postgres


@pytest.fixture
def session(pg_url: str) -> Iterator[Session]:
    engine = create_engine(pg_url)
    try:
        with Session(engine) as session:
            yield session
            session.rollback()
    finally:
        engine.dispose()


@pytest.fixture
def patient(session: Session) -> Patient:
    row = Patient(site="site-amend", patient_id="AMD-1", created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def call(sample_id: str, date: str, value: str, score: float) -> dict[str, Any]:
    return {
        "sample_id": sample_id,
        "collection_date": date,
        "days_since_surgery": 30,
        "call": value,
        "score": score,
        "tumor_fraction": score / 1000,
    }


def mrd(
    status: str, relapse: str | None, *calls: dict[str, Any], rule: str = "mrd-2"
) -> dict[str, Any]:
    return {
        "status": status,
        "molecular_relapse_date": relapse,
        "rule_version": rule,
        "calls": list(calls),
    }


def event(
    sample_id: str, status: str, vaf: float, implication: str = "switch to a SERD"
) -> dict[str, Any]:
    return {
        "gene": "ESR1",
        "protein_change": "p.D538G",
        "locus_key": "chr6:152094402:A>G",
        "drug_class": "aromatase_inhibitor",
        "sample_id": sample_id,
        "event_date": "2025-03-01",
        "first_detected_date": "2025-03-01",
        "status": status,
        "implication": implication,
        "vaf": vaf,
    }


def resistance(*events: dict[str, Any]) -> dict[str, Any]:
    return {"map_version": "map-1", "params_version": "res-1", "events": list(events)}


def run(
    session: Session,
    patient: Patient,
    issued: dict[str, dict[str, Any]],
    computed: dict[str, dict[str, Any]],
    reason: str = "new plasma sample S9",
) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    bodies = copy.deepcopy(computed)
    added = amendments.keep_issued(
        session, patient, reason, {k: json.dumps(v) for k, v in issued.items()}, bodies
    )
    return bodies, added


def announced(session: Session) -> list[ResultAmendedV1]:
    rows = session.scalars(
        select(WebhookEvent).where(
            WebhookEvent.site == "site-amend", WebhookEvent.type == "result.amended"
        )
    )
    return [ResultAmendedV1.model_validate(r.payload) for r in rows]


def test_an_unchanged_call_stays_as_issued_and_a_new_draw_is_no_amendment(
    session: Session, patient: Patient
) -> None:
    issued = mrd("negative", None, call("S1", "2025-03-01", "NEGATIVE", 1.5))
    computed = mrd(
        "positive_unconfirmed",
        None,
        call("S1", "2025-03-01", "NEGATIVE", 1.9),
        call("S2", "2025-04-01", "POSITIVE", 40.0),
    )
    bodies, added = run(session, patient, {"mrd": issued}, {"mrd": computed})
    assert added == [] and announced(session) == []
    first, second = bodies["mrd"]["calls"]
    assert first["score"] == 1.5  # as issued, not 1.9
    assert second["score"] == 40.0
    assert first["amendments"] == [] and bodies["mrd"]["amendments"] == []


def test_a_changed_call_and_the_status_it_moves_are_amended_once(
    session: Session, patient: Patient
) -> None:
    issued = mrd(
        "positive",
        "2025-04-01",
        call("S1", "2025-03-01", "POSITIVE", 30.0),
        call("S2", "2025-04-01", "POSITIVE", 40.0),
    )
    computed = mrd(
        "positive_unconfirmed",
        None,
        call("S1", "2025-03-01", "NEGATIVE", 2.0),
        call("S2", "2025-04-01", "POSITIVE", 41.0),
        rule="mrd-3",
    )
    bodies, added = run(
        session, patient, {"mrd": issued}, {"mrd": computed}, reason="new background: N1"
    )
    assert sorted((a.field, a.sample_id) for a in added) == [
        ("call", "S1"),
        ("molecular_relapse_date", None),
        ("status", None),
    ]
    s1, s2 = bodies["mrd"]["calls"]
    (change,) = s1["amendments"]
    assert change["previous"] == issued["calls"][0]  # the whole issued call
    assert change["current"]["call"] == "NEGATIVE"
    assert change["reason"] == "new background: N1; method version mrd-2 -> mrd-3"
    assert change["method_version"] == "mrd-3"
    assert s2["score"] == 40.0 and s2["amendments"] == []
    assert {a["field"] for a in bodies["mrd"]["amendments"]} == {
        "call",
        "status",
        "molecular_relapse_date",
    }
    (payload,) = announced(session)
    assert payload.reason == "new background: N1"
    values = {(a.field, a.previous_value, a.current_value) for a in payload.amendments}
    assert values == {
        ("call", "POSITIVE", "NEGATIVE"),
        ("status", "positive", "positive_unconfirmed"),
        ("molecular_relapse_date", "2025-04-01", None),
    }

    # the amended body is now what was issued: the same computation again amends nothing
    again, added = run(session, patient, {"mrd": bodies["mrd"]}, {"mrd": computed})
    assert added == [] and len(announced(session)) == 1
    assert again["mrd"]["calls"][0]["amendments"] == s1["amendments"]


def test_a_withdrawn_call_leaves_the_body_and_stays_on_record(
    session: Session, patient: Patient
) -> None:
    issued = mrd(
        "negative",
        None,
        call("S1", "2025-03-01", "NEGATIVE", 1.0),
        call("S2", "2025-04-01", "NEGATIVE", 1.2),
    )
    computed = mrd("negative", None, call("S1", "2025-03-01", "NEGATIVE", 1.1))
    bodies, added = run(session, patient, {"mrd": issued}, {"mrd": computed}, "retraction of S2")
    (withdrawn,) = added
    assert (withdrawn.field, withdrawn.sample_id, json.loads(withdrawn.current)) == (
        "call",
        "S2",
        None,
    )
    assert [c["sample_id"] for c in bodies["mrd"]["calls"]] == ["S1"]
    assert bodies["mrd"]["amendments"] == []
    assert [a["sample_id"] for a in amendments.history_of(session, patient.id)] == ["S2"]


def test_a_corrected_date_moves_the_draw_not_the_result(session: Session, patient: Patient) -> None:
    issued = mrd("negative", None, call("S1", "2025-03-01", "NEGATIVE", 1.0))
    moved = call("S1", "2025-02-01", "NEGATIVE", 1.4)
    moved["days_since_surgery"] = 2
    bodies, added = run(session, patient, {"mrd": issued}, {"mrd": mrd("negative", None, moved)})
    assert added == []
    (kept,) = bodies["mrd"]["calls"]
    assert (kept["collection_date"], kept["days_since_surgery"], kept["score"]) == (
        "2025-02-01",
        2,
        1.0,
    )


def test_resistance_events_by_identity(session: Session, patient: Patient) -> None:
    issued = resistance(event("S2", "emerged", 0.01), event("S3", "rising", 0.03))
    computed = resistance(
        event("S2", "emerged", 0.011),  # numbers only: stands as issued
        event("S3", "withdrawn", 0.03),  # a status never seen before: compared as spelled
        event("S4", "rising", 0.08),  # a new draw's event: a new result
    )
    bodies, added = run(session, patient, {"resistance": issued}, {"resistance": computed})
    (change,) = added
    assert change.field == "event" and change.sample_id == "S3"
    assert json.loads(change.previous)["status"] == "rising"
    assert change.method_version == "res-1 / map-1"
    s2, s3, s4 = bodies["resistance"]["events"]
    assert s2["vaf"] == 0.01 and s2["amendments"] == []
    assert [a["current"]["status"] for a in s3["amendments"]] == ["withdrawn"]
    assert s4["amendments"] == []
    (payload,) = announced(session)
    (item,) = payload.amendments
    assert (item.analysis, item.previous_value, item.current_value) == (
        "resistance",
        "rising",
        "withdrawn",
    )

    gone, added = run(
        session, patient, {"resistance": bodies["resistance"]}, {"resistance": resistance()}
    )
    assert sorted(a.sample_id for a in added) == ["S2", "S3", "S4"]
    assert all(json.loads(a.current) is None for a in added)
    assert gone["resistance"]["events"] == [] and gone["resistance"]["amendments"] == []
    assert len(announced(session)) == 2
