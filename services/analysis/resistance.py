"""The patient's resistance answer as the service serves and sends it: the body of
``GET /v1/patients/{id}/resistance`` (events on the current therapy, withdrawn events,
actionable findings, per-variant states) and the alerts that follow from it.

An alert goes out once per clone and class when its evidence holds (genomics/resistance.py:
``confirmation``): ``resistance.emerged`` (``emerged`` or ``present_at_start``),
``resistance.rising``, ``actionable.detected``. Every sent alert is a row of
``resistance_events``; a later recompute that no longer supports it (a draw sensitive enough to
see the clone did not, or a corrected record) withdraws it with ``resistance.withdrawn``. A
recompute that moves an onset event to a neighbouring draw of the same run of detections (a
background that changed, a late sample) keeps the alert that was sent: one clone, one alert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.alerts import service as alerts
from services.analysis.models import ResistanceEventRecord
from services.analysis.serialize import jsonable
from services.db import utcnow
from services.genomics.longitudinal import LocusSeries
from services.genomics.regions import MONITORED_GENES
from services.genomics.resistance import (
    ActionableFinding,
    LocusCall,
    ResistanceEvent,
    ResistanceMap,
    ResistanceParams,
    resistance_report,
)
from services.genomics.therapy import TherapyLine
from services.patients.models import Patient

ONSET = ("emerged", "present_at_start")
CONTRADICTED = "a later draw sensitive enough to see the clone did not detect it"
UNSUPPORTED = (
    "the current record no longer supports it (a corrected or retracted sample, a changed "
    "therapy, a new background or method version)"
)


@dataclass(frozen=True, slots=True)
class Answer:
    """The stored body, and the results it was built from: events whose evidence holds (or
    awaits confirmation), contradicted events, actionable findings, each locus' draws."""

    body: dict[str, Any]
    held: list[ResistanceEvent]
    contradicted: list[ResistanceEvent]
    actionable: list[ActionableFinding]
    calls: dict[str, tuple[LocusCall, ...]]


@dataclass(frozen=True, slots=True)
class Alert:
    """One webhook to send: its type and payload."""

    event_type: str
    data: dict[str, Any]


def resistance_body(
    patient_id: str,
    series: Sequence[LocusSeries],
    lines: Sequence[TherapyLine],
    rmap: ResistanceMap,
    params: ResistanceParams,
) -> Answer:
    """The patient's resistance answer (see ``Answer``).

    Germline candidates are not a resistance clone (longitudinal.germline_suspected)."""
    mapped = [
        s
        for s in series
        if s.gene in MONITORED_GENES and s.protein_change and not s.germline_suspected
    ]
    report = resistance_report(mapped, lines, rmap, params)
    held = [e for e in report.events if e.confirmation != "contradicted"]
    contradicted = [e for e in report.events if e.confirmation == "contradicted"]
    body = {
        "patient_id": patient_id,
        "map_version": report.map_version,
        "params_version": params.version,
        "events": [_event_json(e) for e in held],
        "withdrawn_events": [
            {**_event_json(e), "withdrawn_reason": CONTRADICTED} for e in contradicted
        ],
        "actionable": [{**jsonable(a), "locus_key": a.key} for a in report.actionable],
        "variants": jsonable(report.variants),
        "current_therapy": [jsonable(line) for line in lines if line.stop_date is None],
        "computed_at": utcnow().isoformat(),
    }
    calls = {variant.key: variant.calls for variant in report.variants}
    return Answer(body, held, contradicted, list(report.actionable), calls)


def _event_json(event: ResistanceEvent) -> dict[str, Any]:
    return {**jsonable(event), "locus_key": event.key}


def alerts_to_send(session: Session, patient: Patient, answer: Answer) -> list[Alert]:
    """Record the alerts this recompute adds or withdraws, and return them to be sent (in the
    caller's transaction, through the outbox)."""
    records = list(
        session.scalars(
            select(ResistanceEventRecord)
            .where(
                ResistanceEventRecord.patient_pk == patient.id,
                ResistanceEventRecord.withdrawn_at.is_(None),
            )
            .order_by(ResistanceEventRecord.id)
        )
    )
    plan = plan_alerts(records, answer, patient.patient_id, utcnow())
    for record in plan.new:
        record.patient_pk = patient.id
    session.add_all(plan.new)
    session.flush()
    return plan.alerts


@dataclass(frozen=True, slots=True)
class Plan:
    """What one recompute does to the patient's alerts: the records of the new ones (not yet
    added to a session), the records it withdrew (``withdrawn_at`` set), the webhooks."""

    new: list[ResistanceEventRecord]
    withdrawn: list[ResistanceEventRecord]
    alerts: list[Alert]


def plan_alerts(
    records: Sequence[ResistanceEventRecord], answer: Answer, patient_id: str, now: dt.datetime
) -> Plan:
    """The alerts of a recompute, given the patient's sent, not withdrawn ones (pure but for
    setting ``withdrawn_at`` on the records it withdraws): benchmarks replay it draw by draw."""
    kept: set[int] = set()
    new: list[ResistanceEventRecord] = []
    out: list[Alert] = []
    for event in answer.held:
        if event.confirmation != "confirmed":
            continue
        calls = answer.calls.get(event.key, ())
        record = _matching(records, kept, event.key, event.drug_class, event, calls)
        if record is not None:
            kept.add(id(record))
            continue
        new.append(_record(event.key, event.drug_class, str(event.status), event, now))
        kind = "resistance.rising" if event.status == "rising" else "resistance.emerged"
        out.append(Alert(kind, _event_payload(patient_id, event)))
    for finding in answer.actionable:
        record = _matching(records, kept, finding.key, finding.drug_class, None, ())
        if record is not None:
            kept.add(id(record))
            continue
        new.append(_record(finding.key, finding.drug_class, "actionable", finding, now))
        out.append(Alert("actionable.detected", _actionable_payload(patient_id, finding)))
    refuted = {(e.key, e.drug_class, e.sample_id) for e in answer.contradicted}
    withdrawn = [record for record in records if id(record) not in kept]
    for record in withdrawn:
        record.withdrawn_at = now
        reason = (
            CONTRADICTED
            if (record.locus_key, record.drug_class, record.sample_id) in refuted
            else UNSUPPORTED
        )
        out.append(Alert("resistance.withdrawn", _withdrawn_payload(patient_id, record, reason)))
    return Plan(new, withdrawn, out)


def send(session: Session, patient: Patient, alerts_out: Iterable[Alert]) -> None:
    for alert in alerts_out:
        alerts.emit(session, patient.site, alert.event_type, alert.data)


def _matching(
    records: Sequence[ResistanceEventRecord],
    kept: set[int],
    key: str,
    drug_class: str,
    event: ResistanceEvent | None,
    calls: Sequence[LocusCall],
) -> ResistanceEventRecord | None:
    """The sent, not yet withdrawn alert this result continues: the same locus and class, and
    an actionable finding for a finding; a rise at the same draw for a rise; for an onset, an
    onset of the same clone: its run of detections (first detection to event draw) overlaps
    this one's, or no draw between the two was sensitive enough to have seen the clone at
    today's level and missed it (a changed background can move the start of a run)."""
    for record in records:
        if id(record) in kept or record.locus_key != key or record.drug_class != drug_class:
            continue
        if event is None:
            if record.status == "actionable":
                return record
            continue
        if event.status == "rising":
            if record.status == "rising" and record.sample_id == event.sample_id:
                return record
            continue
        if record.status in ONSET and _same_clone(record, event, calls):
            return record
    return None


def _same_clone(
    record: ResistanceEventRecord, event: ResistanceEvent, calls: Sequence[LocusCall]
) -> bool:
    sent = (record.first_detected_date, record.event_date or record.first_detected_date)
    now = (event.first_detected_date, event.event_date)
    if max(sent[0], now[0]) <= min(sent[1], now[1]):
        return True
    gap = (min(sent[1], now[1]), max(sent[0], now[0]))
    return not any(
        gap[0] < call.collection_date < gap[1]
        and call.depth > 0
        and not call.detected
        and call.lod95 < event.vaf
        for call in calls
    )


def _record(
    key: str,
    drug_class: str,
    status: str,
    result: ResistanceEvent | ActionableFinding,
    now: dt.datetime,
) -> ResistanceEventRecord:
    return ResistanceEventRecord(
        locus_key=key,
        gene=result.gene,
        protein_change=result.protein_change,
        drug_class=drug_class,
        status=status,
        first_detected_date=result.first_detected_date,
        event_date=result.event_date if isinstance(result, ResistanceEvent) else result.alert_date,
        sample_id=result.sample_id,
        created_at=now,
    )


def _event_payload(patient_id: str, event: ResistanceEvent) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "patient_id": patient_id,
        "sample_id": event.sample_id,
        "gene": event.gene,
        "protein_change": event.protein_change,
        "status": str(event.status),
        "first_detected_date": event.first_detected_date,
        "drug_class": event.drug_class,
        "implication": event.implication,
        "map_version": event.map_version,
        "event_date": event.event_date,
        "alert_date": event.alert_date,
        "alert_sample_id": event.alert_sample_id,
        "drug": event.drug,
        "vaf": event.vaf,
        "evidence_level": event.evidence_level,
    }
    if event.status == "rising":
        payload["fold_change"] = event.fold_change
        payload["previous_sample_id"] = event.previous_sample_id
    return payload


def _actionable_payload(patient_id: str, finding: ActionableFinding) -> dict[str, Any]:
    return {
        "patient_id": patient_id,
        "sample_id": finding.sample_id,
        "gene": finding.gene,
        "protein_change": finding.protein_change,
        "drug_class": finding.drug_class,
        "drugs": list(finding.drugs),
        "evidence_level": finding.evidence_level,
        "implication": finding.implication,
        "first_detected_date": finding.first_detected_date,
        "alert_date": finding.alert_date,
        "map_version": finding.map_version,
    }


def _withdrawn_payload(
    patient_id: str, record: ResistanceEventRecord, reason: str
) -> dict[str, Any]:
    return {
        "patient_id": patient_id,
        "sample_id": record.sample_id,
        "gene": record.gene,
        "protein_change": record.protein_change,
        "status": record.status,
        "drug_class": record.drug_class,
        "first_detected_date": record.first_detected_date,
        "alerted_at": record.created_at,
        "reason": reason,
    }
