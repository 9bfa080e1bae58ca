"""Patients and clinical events, and their corrections (each recomputes the analyses, whose
amendments carry the correction's reason)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from schemas.patients import EventCreate, EventUpdate
from services.analysis import service as analysis
from services.db import utcnow
from services.errors import Conflict, InvalidInput, NotFound
from services.genomics.therapy import drug_class_for
from services.patients import repository
from services.patients.models import Patient, PatientEvent
from services.sites import service as sites


def get_patient_or_raise(session: Session, site: str, patient_id: str) -> Patient:
    patient = repository.get(session, site, patient_id)
    if patient is None:
        raise NotFound(
            f"patient {patient_id!r} not found at this site (GET /v1/patients lists the "
            "site's patients; POST /v1/patients creates one)"
        )
    return patient


def create_patient(session: Session, site: str, patient_id: str) -> Patient:
    if repository.get(session, site, patient_id) is not None:
        raise Conflict(f"patient {patient_id!r} already exists")
    patient = Patient(site=site, patient_id=patient_id, created_at=utcnow())
    session.add(patient)
    session.flush()
    return patient


def get_or_create_patient(session: Session, site: str, patient_id: str) -> Patient:
    patient = repository.get(session, site, patient_id)
    if patient is None:
        repository.insert_if_absent(session, site, patient_id, utcnow())
        patient = repository.get(session, site, patient_id)
        assert patient is not None
    return patient


def add_event(session: Session, patient: Patient, event: EventCreate) -> PatientEvent:
    drug, drug_class = _checked(
        session, patient, event.type, event.date, event.drug, event.drug_class
    )
    row = PatientEvent(
        patient_pk=patient.id,
        type=event.type,
        event_date=event.date,
        drug=drug,
        drug_class=drug_class,
        note=event.note,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def _checked(
    session: Session,
    patient: Patient,
    event_type: str,
    date: dt.date,
    drug: str | None,
    drug_class: str | None,
) -> tuple[str | None, str | None]:
    """The event's drug (as given, trimmed and lower-cased) and drug class (given, or implied
    by the drug); refused: a date after tomorrow in the site's time, a drug on an event that
    takes none, a therapy without a class."""
    sites.check_not_future(session, patient.site, date, what="event date")
    if event_type in ("therapy_start", "therapy_stop"):
        drug_class = resolve_drug_class(drug, drug_class, event_type)
    elif drug or drug_class:
        raise InvalidInput(f"an event of type {event_type!r} takes no drug or drug_class")
    return (drug.strip().lower() if drug else None), drug_class


def get_event_or_raise(session: Session, patient: Patient, event_id: int) -> PatientEvent:
    event = session.get(PatientEvent, event_id)
    if event is None or event.patient_pk != patient.id:
        raise NotFound(f"event {event_id} of patient {patient.patient_id!r} not found")
    return event


# The fields of EventUpdate and the event's columns they set.
EVENT_FIELDS = {
    "type": "type",
    "date": "event_date",
    "drug": "drug",
    "drug_class": "drug_class",
    "note": "note",
}


def correct_event(
    session: Session, patient: Patient, event_id: int, body: EventUpdate
) -> tuple[PatientEvent, dict[str, list[Any]]]:
    """Apply the fields sent (checked as a new event would be) and recompute the patient's
    analyses; returns the event and what changed (field: [before, after])."""
    event = get_event_or_raise(session, patient, event_id)
    sent = body.model_fields_set
    wanted = {
        name: getattr(body, name) if name in sent else getattr(event, column)
        for name, column in EVENT_FIELDS.items()
    }
    if wanted["type"] is None or wanted["date"] is None:
        raise InvalidInput("an event keeps a type and a date: send a value, not null")
    drug, drug_class = _checked(
        session, patient, wanted["type"], wanted["date"], wanted["drug"], wanted["drug_class"]
    )
    wanted.update(drug=drug, drug_class=drug_class)
    changes: dict[str, list[Any]] = {}
    for name, column in EVENT_FIELDS.items():
        before = getattr(event, column)
        if before != wanted[name]:
            changes[name] = [before, wanted[name]]
            setattr(event, column, wanted[name])
    if changes:
        session.flush()
        analysis.recompute_safely(
            session,
            patient,
            f"correction of event {event.id} ({', '.join(changes)}): {body.reason}",
        )
    return event, changes


def delete_event(session: Session, patient: Patient, event_id: int, reason: str) -> dict[str, Any]:
    """Delete the event and recompute the patient's analyses; returns the event as it was."""
    event = get_event_or_raise(session, patient, event_id)
    gone = {
        "id": event.id,
        "type": event.type,
        "date": event.event_date,
        "drug": event.drug,
        "drug_class": event.drug_class,
        "note": event.note,
    }
    session.delete(event)
    session.flush()
    analysis.recompute_safely(
        session,
        patient,
        f"deletion of event {gone['id']} ({gone['type']} {gone['date']}): {reason}",
    )
    return gone


def resolve_drug_class(drug: str | None, drug_class: str | None, event_type: str) -> str | None:
    """A therapy event needs a class: given, or implied by a known drug name."""
    if event_type == "therapy_stop" and drug is None and drug_class is None:
        raise InvalidInput("therapy_stop needs the drug or the drug_class it stops")
    if drug is None and drug_class is None:
        raise InvalidInput("therapy_start needs a drug or a drug_class")
    return drug_class_for(drug, drug_class)
