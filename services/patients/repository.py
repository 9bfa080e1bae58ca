"""Queries on patients and events; every lookup is scoped to a site."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.patients.models import Patient, PatientEvent
from services.samples.models import Sample


def get(session: Session, site: str, patient_id: str) -> Patient | None:
    return session.scalar(
        select(Patient).where(Patient.site == site, Patient.patient_id == patient_id)
    )


def list_with_counts(
    session: Session, site: str, *, after: str | None, limit: int
) -> Sequence[tuple[Patient, int]]:
    counts = (
        select(Sample.patient_pk, func.count().label("n"))
        .group_by(Sample.patient_pk)
        .subquery()
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
