"""Patients and clinical events."""

from __future__ import annotations

from sqlalchemy.orm import Session

from schemas.patients import EventCreate
from services.db import utcnow
from services.errors import Conflict, InvalidInput, NotFound
from services.genomics.therapy import drug_class_for
from services.patients import repository
from services.patients.models import Patient, PatientEvent


def get_patient_or_raise(session: Session, site: str, patient_id: str) -> Patient:
    patient = repository.get(session, site, patient_id)
    if patient is None:
        raise NotFound(f"patient {patient_id!r} not found")
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
    drug_class = event.drug_class
    if event.type in ("therapy_start", "therapy_stop"):
        drug_class = resolve_drug_class(event.drug, event.drug_class, event.type)
    elif event.drug or event.drug_class:
        raise InvalidInput(f"an event of type {event.type!r} takes no drug or drug_class")
    row = PatientEvent(
        patient_pk=patient.id,
        type=event.type,
        event_date=event.date,
        drug=event.drug.strip().lower() if event.drug else None,
        drug_class=drug_class,
        note=event.note,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def resolve_drug_class(drug: str | None, drug_class: str | None, event_type: str) -> str | None:
    """A therapy event needs a class: given, or implied by a known drug name."""
    if event_type == "therapy_stop" and drug is None and drug_class is None:
        raise InvalidInput("therapy_stop needs the drug or the drug_class it stops")
    if drug is None and drug_class is None:
        raise InvalidInput("therapy_start needs a drug or a drug_class")
    return drug_class_for(drug, drug_class)
