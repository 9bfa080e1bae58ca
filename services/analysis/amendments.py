"""Issued results as a clinical record: what was reported is never changed silently.

A result is issued as soon as it is stored (the API may serve it at any moment). A recompute
compares the results it computed with those issued, generically, by their keys:

- MRD calls by `sample_id`: an issued call whose `call` is unchanged stays exactly as issued,
  numbers included (only the draw's own fields, its collection date, follow a correction); a
  call whose `call` changed, or that is gone (its sample retracted or moved, no longer after
  surgery), is amended.
- The patient-level `status` and `molecular_relapse_date`: a change is an amendment, unless
  new draws collected after every issued one are all that changed (that is a new result,
  announced by `mrd.status_changed` as before).
- Resistance events by identity (the locus, or gene and protein change without one; the drug
  class; the draw that fired the event): an issued event whose `status`, `first_detected_date`
  or `implication` changed, or that is gone, is amended; an unchanged one stays as issued.

Each amendment is a row (the whole issued value, the new value or null when withdrawn, the
reason the recompute was run, the time and the method version), listed with the result it
amends in the stored bodies, and announced once by one `result.amended` event per recompute.
Values are compared as the bodies spell them, so a new spelling of a status needs no change
here."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.alerts import service as alerts
from services.analysis.models import ResultAmendment
from services.analysis.serialize import dumps
from services.db import utcnow
from services.patients.models import Patient

CALL_FIELDS = ("call",)
# Fields of an MRD call or a resistance event that describe the draw, not the result: they
# follow a correction of the sample without amending what was reported.
DRAW_FIELDS = ("collection_date", "days_since_surgery", "event_date")
PATIENT_FIELDS = ("status", "molecular_relapse_date")
# The patient status after a draw follows the series (the patient-level status is what is
# amended): an issued call keeps its value, its place in the series is the current one.
SERIES_FIELDS = ("status_after",)
# Whether a resistance event's evidence holds follows the later draws (an event awaiting
# confirmation is confirmed by the next draw that detects it again); a contradicted event
# leaves the events and is amended as withdrawn.
ALERT_FIELDS = ("confirmation", "alert_date", "alert_sample_id")
EVENT_FIELDS = ("status", "first_detected_date", "implication")
VERSION_FIELDS = ("rule_version", "background_version", "params_version", "map_version")
REASON_CHARS = 2000


@dataclass(frozen=True, slots=True)
class _Change:
    field: str
    sample_id: str | None
    subject: str | None
    previous: Any
    current: Any


def keep_issued(
    session: Session,
    patient: Patient,
    reason: str,
    issued: Mapping[str, str | None],
    computed: Mapping[str, dict[str, Any]],
) -> list[ResultAmendment]:
    """Restore the issued results the recompute did not change in `computed` (the bodies about
    to be stored, by analysis: "mrd", "resistance"), record an amendment for each one it did
    change, attach every amendment to its result, and announce the new ones. `issued` holds the
    stored bodies (JSON text) the recompute replaces."""
    now = utcnow()
    added: list[ResultAmendment] = []
    for analysis, body in computed.items():
        text = issued.get(analysis)
        if not text:
            continue
        previous = json.loads(text)
        changes = (
            _mrd_changes(previous, body) if analysis == "mrd" else _event_changes(previous, body)
        )
        if not changes:
            continue
        version = _version(body)
        why = reason
        if _version(previous) != version:
            why += f"; method version {_version(previous) or 'unknown'} -> {version}"
        for change in changes:
            added.append(
                ResultAmendment(
                    patient_pk=patient.id,
                    analysis=analysis,
                    field=change.field,
                    sample_id=change.sample_id,
                    subject=change.subject,
                    previous=dumps(change.previous),
                    current=dumps(change.current),
                    reason=why[:REASON_CHARS],
                    method_version=version[:256],
                    amended_at=now,
                )
            )
    if added:
        session.add_all(added)
        session.flush()
        _announce(session, patient, reason, added)
    history = history_of(session, patient.id) if added or any(issued.values()) else []
    for analysis, body in computed.items():
        _attach(body, [a for a in history if a["analysis"] == analysis])
    return added


def history_of(session: Session, patient_pk: int) -> list[dict[str, Any]]:
    """Every amendment of the patient's results, oldest first, as the API shows them."""
    return [
        as_json(row)
        for row in session.scalars(
            select(ResultAmendment)
            .where(ResultAmendment.patient_pk == patient_pk)
            .order_by(ResultAmendment.id)
        )
    ]


def as_json(row: ResultAmendment) -> dict[str, Any]:
    return {
        "id": row.id,
        "analysis": row.analysis,
        "field": row.field,
        "sample_id": row.sample_id,
        "subject": row.subject,
        "previous": json.loads(row.previous),
        "current": json.loads(row.current),
        "reason": row.reason,
        "method_version": row.method_version,
        "amended_at": row.amended_at.isoformat(),
    }


# --- comparing ----------------------------------------------------------------------------------


def _mrd_changes(issued: dict[str, Any], body: dict[str, Any]) -> list[_Change]:
    before = {c["sample_id"]: c for c in issued.get("calls") or []}
    calls = body.get("calls") or []
    changes: list[_Change] = []
    moved = False
    for index, call in enumerate(calls):
        was = before.get(call["sample_id"])
        if was is None:
            continue
        if _same(was, call, CALL_FIELDS):
            calls[index] = _as_issued(was, call)
            moved = moved or not _same(was, call, DRAW_FIELDS)
        else:
            changes.append(_Change("call", call["sample_id"], call["sample_id"], _bare(was), call))
    present = {c["sample_id"] for c in calls}
    changes += [
        _Change("call", sample_id, sample_id, _bare(was), None)
        for sample_id, was in before.items()
        if sample_id not in present
    ]
    if before and not (not changes and not moved and _only_later_draws(before, calls)):
        changes += [
            _Change(name, None, None, issued.get(name), body.get(name))
            for name in PATIENT_FIELDS
            if issued.get(name) != body.get(name)
        ]
    return changes


def _only_later_draws(before: dict[str, dict[str, Any]], calls: Sequence[dict[str, Any]]) -> bool:
    """Whether the calls are the issued ones plus new draws collected after all of them."""
    latest = max(str(c.get("collection_date")) for c in before.values())
    added = [c for c in calls if c["sample_id"] not in before]
    return bool(added) and all(str(c.get("collection_date")) > latest for c in added)


def _event_changes(issued: dict[str, Any], body: dict[str, Any]) -> list[_Change]:
    before = dict(_keyed(issued.get("events") or []))
    events = body.get("events") or []
    changes: list[_Change] = []
    present = set()
    for index, (key, event) in enumerate(_keyed(events)):
        present.add(key)
        was = before.get(key)
        if was is None:
            continue
        if _same(was, event, EVENT_FIELDS):
            events[index] = _as_issued(was, event)
        else:
            changes.append(_Change("event", event.get("sample_id"), key, _bare(was), event))
    changes += [
        _Change("event", was.get("sample_id"), key, _bare(was), None)
        for key, was in before.items()
        if key not in present
    ]
    return changes


def event_identity(event: Mapping[str, Any]) -> str:
    """What a resistance event is, whatever else about it changes: the locus (or gene and
    protein change), the drug class, and the draw that fired it."""
    locus = event.get("locus_key") or f"{event.get('gene')} {event.get('protein_change')}"
    return f"{locus} {event.get('drug_class')} @{event.get('sample_id')}"


def _keyed(events: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(identity, event); a second event of the same identity gets "#2", and so on."""
    seen: Counter[str] = Counter()
    keyed = []
    for event in events:
        identity = event_identity(event)
        seen[identity] += 1
        keyed.append((identity if seen[identity] == 1 else f"{identity} #{seen[identity]}", event))
    return keyed


def _same(a: Mapping[str, Any], b: Mapping[str, Any], fields: Sequence[str]) -> bool:
    return all(a.get(f) == b.get(f) for f in fields)


def _as_issued(issued: dict[str, Any], computed: Mapping[str, Any]) -> dict[str, Any]:
    """The issued result, with the draw's own fields as they are now."""
    live = (*DRAW_FIELDS, *SERIES_FIELDS, *ALERT_FIELDS)
    return {**issued, **{f: computed[f] for f in live if f in computed}}


def _bare(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result as issued, without the amendments listed on it (they are rows of their own)."""
    return {k: v for k, v in result.items() if k != "amendments"}


def _version(body: Mapping[str, Any]) -> str:
    return " / ".join(str(body[f]) for f in VERSION_FIELDS if body.get(f))


# --- showing and announcing ---------------------------------------------------------------------


def _attach(body: dict[str, Any], history: Sequence[dict[str, Any]]) -> None:
    """List the amendments in the body: each call's or event's own on it, and at the top those
    of the patient-level fields and of the results still shown (a withdrawn result leaves the
    body; its record stays in GET /v1/patients/{patient_id}/amendments)."""
    if "calls" in body:
        field, items = "call", body["calls"]
        keys = [call["sample_id"] for call in items]
    else:
        field, items = "event", body.get("events") or []
        keys = [key for key, _ in _keyed(items)]
    for item, subject in zip(items, keys, strict=True):
        item["amendments"] = [a for a in history if a["field"] == field and a["subject"] == subject]
    shown = set(keys)
    body["amendments"] = [a for a in history if a["field"] != field or a["subject"] in shown]


def _value(value: Any) -> str | None:
    """The categorical value an amendment changes, as a webhook carries it."""
    if value is None:
        return None
    if isinstance(value, dict):
        for name in ("call", "status"):
            if name in value:
                return str(value[name])
    return str(value)


def _announce(
    session: Session, patient: Patient, reason: str, added: Sequence[ResultAmendment]
) -> None:
    alerts.emit(
        session,
        patient.site,
        "result.amended",
        {
            "patient_id": patient.patient_id,
            "reason": reason[:REASON_CHARS],
            "amended_at": added[0].amended_at,
            "amendments": [
                {
                    "amendment_id": row.id,
                    "analysis": row.analysis,
                    "field": row.field,
                    "sample_id": row.sample_id,
                    "subject": row.subject,
                    "previous_value": _value(json.loads(row.previous)),
                    "current_value": _value(json.loads(row.current)),
                    "reason": row.reason,
                    "method_version": row.method_version,
                }
                for row in added
            ],
        },
    )
