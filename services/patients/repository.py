"""Queries on patients and events; every lookup is scoped to a site."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.analysis.models import PatientAnalysis
from services.patients.models import Patient, PatientEvent
from services.samples.models import Sample


def get(session: Session, site: str, patient_id: str) -> Patient | None:
    return session.scalar(
        select(Patient).where(Patient.site == site, Patient.patient_id == patient_id)
    )


def insert_if_absent(session: Session, site: str, patient_id: str, created_at: datetime) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: of concurrent first uploads for a new patient, one
    inserts and the others wait for it and then find its row, instead of failing."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        dialect.insert(Patient)
        .values(site=site, patient_id=patient_id, created_at=created_at)
        .on_conflict_do_nothing(index_elements=["site", "patient_id"])
    )


def list_with_counts(
    session: Session, site: str, *, after: str | None, limit: int
) -> Sequence[tuple[Patient, int]]:
    counts = (
        select(Sample.patient_pk, func.count().label("n")).group_by(Sample.patient_pk).subquery()
    )
    stmt = (
        select(Patient, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.patient_pk == Patient.id)
        .where(Patient.site == site)
        .order_by(Patient.patient_id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Patient.patient_id > after)
    return [(p, int(n)) for p, n in session.execute(stmt)]


def events(session: Session, patient_pk: int) -> Sequence[PatientEvent]:
    return session.scalars(
        select(PatientEvent)
        .where(PatientEvent.patient_pk == patient_pk)
        .order_by(PatientEvent.event_date, PatientEvent.id)
    ).all()


def samples(session: Session, patient_pk: int) -> Sequence[Sample]:
    return session.scalars(
        select(Sample)
        .where(Sample.patient_pk == patient_pk)
        .order_by(Sample.collection_date, Sample.id)
    ).all()


def overview(
    session: Session, site: str, *, query: str | None, sort: str, offset: int, limit: int
) -> tuple[int, list[dict[str, object]]]:
    """One page of the patient list with sample counts, last draw and analysis statuses, in a
    single query (the list must stay fast with thousands of patients)."""
    counts = (
        select(
            Sample.patient_pk,
            func.count().label("n"),
            func.max(Sample.collection_date).label("last_draw"),
        )
        .group_by(Sample.patient_pk)
        .subquery()
    )
    mrd = (
        select(PatientAnalysis.patient_pk, PatientAnalysis.status)
        .where(PatientAnalysis.kind == "mrd")
        .subquery()
    )
    resistance = (
        select(PatientAnalysis.patient_pk, PatientAnalysis.status)
        .where(PatientAnalysis.kind == "resistance")
        .subquery()
    )
    stmt = (
        select(
            Patient.id,
            Patient.patient_id,
            func.coalesce(counts.c.n, 0),
            counts.c.last_draw,
            mrd.c.status,
            resistance.c.status,
        )
        .outerjoin(counts, counts.c.patient_pk == Patient.id)
        .outerjoin(mrd, mrd.c.patient_pk == Patient.id)
        .outerjoin(resistance, resistance.c.patient_pk == Patient.id)
        .where(Patient.site == site)
    )
    if query:
        stmt = stmt.where(Patient.patient_id.ilike(f"%{query}%"))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    order = {
        "patient": [Patient.patient_id],
        "last_draw": [counts.c.last_draw.desc(), Patient.patient_id],
        "status": [mrd.c.status, Patient.patient_id],
    }[sort]
    rows = session.execute(stmt.order_by(*order).offset(offset).limit(limit)).all()
    pks = [r[0] for r in rows]
    therapy: dict[int, list[str]] = {pk: [] for pk in pks}
    if pks:
        for event in session.scalars(
            select(PatientEvent)
            .where(
                PatientEvent.patient_pk.in_(pks),
                PatientEvent.type.in_(("therapy_start", "therapy_stop")),
            )
            .order_by(PatientEvent.event_date, PatientEvent.id)
        ):
            current = therapy[event.patient_pk]
            name = event.drug or event.drug_class or "?"
            if event.type == "therapy_start":
                current.append(name)
            elif name in current:
                current.remove(name)
    items = [
        {
            "patient_id": r[1],
            "samples": r[2],
            "last_draw": r[3],
            "mrd_status": r[4],
            "resistance": r[5],
            "therapy": ", ".join(therapy[r[0]]),
        }
        for r in rows
    ]
    return total, items
