"""Patients and clinical events, and their corrections (each recomputes the analyses, whose
amendments carry the correction's reason)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, cast

from sqlalchemy.orm import Session

from schemas.patients import EventCreate, EventUpdate, Her2Ihc, Her2Ish, Specimen
from schemas.receptors import DiscordanceRead, ReceptorEventRead, ReceptorsRead
from services.analysis import service as analysis
from services.db import utcnow
from services.errors import Conflict, InvalidInput, NotFound
from services.genomics.receptors import (
    Discordance,
    ReceptorParams,
    ReceptorProfile,
    ReceptorRules,
    ReceptorTest,
    discordance,
    load_receptor_rules,
    profile,
)
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
    receptor = _receptor_columns(
        event.type, event.date, {name: getattr(event, name) for name in RECEPTOR_FIELDS}
    )
    row = PatientEvent(
        patient_pk=patient.id,
        type=event.type,
        event_date=event.date,
        drug=drug,
        drug_class=drug_class,
        note=event.note,
        created_at=utcnow(),
        **receptor,
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


# The receptor_status fields of the API and their columns.
RECEPTOR_FIELDS = {
    "specimen": "specimen",
    "site": "specimen_site",
    "er": "er",
    "pr": "pr",
    "her2_ihc": "her2_ihc",
    "her2_ish": "her2_ish",
}


def _hormone(value: float | str | None) -> float | str | None:
    """ER or PR as the API has it: a stored percentage ("90") is the number again."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def receptor_fields(event: PatientEvent) -> dict[str, Any]:
    """The receptor_status fields of a stored event, as the API returns them."""
    values = {name: getattr(event, column) for name, column in RECEPTOR_FIELDS.items()}
    values.update(er=_hormone(values["er"]), pr=_hormone(values["pr"]))
    return values


def _receptor_columns(
    event_type: str, date: dt.date, values: dict[str, Any]
) -> dict[str, str | None]:
    """The receptor columns of an event (values as sent, or as stored); refused: a receptor
    field on another event type, a receptor_status without specimen or without any of er, pr,
    her2_ihc, her2_ish, or a value the science cannot read (named)."""
    given = [name for name, value in values.items() if value is not None]
    if event_type != "receptor_status":
        if given:
            raise InvalidInput(
                f"an event of type {event_type!r} takes no {', '.join(given)} "
                "(receptor_status fields)"
            )
        return dict.fromkeys(RECEPTOR_FIELDS.values())
    if values["specimen"] is None:
        raise InvalidInput("receptor_status needs a specimen: primary, recurrence or metastasis")
    if not {"er", "pr", "her2_ihc", "her2_ish"} & set(given):
        raise InvalidInput("receptor_status needs at least one of er, pr, her2_ihc, her2_ish")
    er, pr = _hormone(values["er"]), _hormone(values["pr"])
    profile(
        ReceptorTest(
            date, values["specimen"], values["site"], er, pr, values["her2_ihc"], values["her2_ish"]
        )
    )
    stored = {**values, "er": _stored_hormone(er), "pr": _stored_hormone(pr)}
    return {column: stored[name] for name, column in RECEPTOR_FIELDS.items()}


def _stored_hormone(value: float | str | None) -> str | None:
    return f"{value:g}" if isinstance(value, float | int) else value


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
    sent_receptor = {
        name: getattr(body, name) if name in sent else getattr(event, column)
        for name, column in RECEPTOR_FIELDS.items()
    }
    receptor = _receptor_columns(wanted["type"], wanted["date"], sent_receptor)
    wanted.update({name: receptor[column] for name, column in RECEPTOR_FIELDS.items()})
    changes: dict[str, list[Any]] = {}
    for name, column in {**EVENT_FIELDS, **RECEPTOR_FIELDS}.items():
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
    if event.type == "receptor_status":
        gone.update(receptor_fields(event))
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


@cache
def receptor_rules() -> ReceptorRules:
    """The packaged receptor rule table, read and validated once per process."""
    return load_receptor_rules()


@dataclass(frozen=True, slots=True)
class ReceptorHistory:
    params: ReceptorParams
    rules_version: str
    events: list[tuple[int, ReceptorProfile]]
    """(event id, the test read), by date."""
    discordance: list[Discordance]


def receptor_history(session: Session, patient: Patient) -> ReceptorHistory:
    """The patient's receptor_status events read by the science (genomics.receptors), and
    their discordance between the first primary and the latest relapse."""
    params, rules = ReceptorParams(), receptor_rules()
    read = [
        (
            e.id,
            profile(
                ReceptorTest(
                    e.event_date,
                    e.specimen or "",
                    e.specimen_site,
                    _hormone(e.er),
                    _hormone(e.pr),
                    e.her2_ihc,
                    e.her2_ish,
                ),
                params,
            ),
        )
        for e in repository.events(session, patient.id, "receptor_status")
    ]
    return ReceptorHistory(
        params=params,
        rules_version=rules.version,
        events=read,
        discordance=discordance([p for _, p in read], rules),
    )


def receptors_read(session: Session, patient: Patient) -> ReceptorsRead:
    """GET /receptors, the patient page and the report: the history as the API returns it."""
    history = receptor_history(session, patient)
    return ReceptorsRead(
        patient_id=patient.patient_id,
        rules_version=history.rules_version,
        params_version=history.params.version,
        events=[
            ReceptorEventRead(
                event_id=event_id,
                date=p.test.date,
                specimen=cast(Specimen, p.test.specimen),
                site=p.test.site,
                er=p.test.er,
                pr=p.test.pr,
                her2_ihc=cast("Her2Ihc | None", p.test.her2_ihc),
                her2_ish=cast("Her2Ish | None", p.test.her2_ish),
                er_status=p.er_status,
                pr_status=p.pr_status,
                her2_category=p.her2_category,
                subtype=p.subtype,
                subtype_label=p.subtype_label,
            )
            for event_id, p in history.events
        ],
        discordance=[
            DiscordanceRead(
                receptor=cast(Literal["ER", "PR", "HER2"], d.receptor),
                primary=d.primary,
                latest=d.latest,
                primary_date=d.primary_date,
                latest_date=d.latest_date,
                change=d.change,
                rule_id=d.rule_id,
                implication=d.implication,
                citations=list(d.citations),
            )
            for d in history.discordance
        ],
    )
