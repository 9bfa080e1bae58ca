"""Queries on patients and events; every lookup is scoped to a site."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from schemas.analyses import MRD_PATIENT_STATUSES
from services.analysis.models import PatientAnalysis
from services.pagination import Keyset, PageRequest
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


PATIENTS = Keyset("patients", (Patient.patient_id,))


def list_with_counts(
    session: Session, site: str, page: PageRequest
) -> tuple[list[tuple[Patient, dict[str, int]]], str | None]:
    """One page of the site's patients by patient_id (keyset on the (site, patient_id) unique
    index), each with its number of samples by status, and the next page's cursor."""
    stmt = PATIENTS.select_page(select(Patient).where(Patient.site == site), page)
    patients, cursor = PATIENTS.paginate(list(session.scalars(stmt)), page)
    counts = samples_by_status(session, [p.id for p in patients])
    return [(p, counts.get(p.id, {})) for p in patients], cursor


def samples_by_status(session: Session, patient_pks: Sequence[int]) -> dict[int, dict[str, int]]:
    """patient pk -> {sample status: count} (pending, processed, failed, retracted), counted
    for these patients only, on ix_samples_patient_status."""
    counts: dict[int, dict[str, int]] = {}
    if patient_pks:
        for patient_pk, status, n in session.execute(
            select(Sample.patient_pk, Sample.status, func.count())
            .where(Sample.patient_pk.in_(patient_pks))
            .group_by(Sample.patient_pk, Sample.status)
        ):
            counts.setdefault(patient_pk, {})[status] = int(n)
    return counts


def events(
    session: Session, patient_pk: int, event_type: str | None = None
) -> Sequence[PatientEvent]:
    """The patient's events by date (of one type when given)."""
    stmt = select(PatientEvent).where(PatientEvent.patient_pk == patient_pk)
    if event_type is not None:
        stmt = stmt.where(PatientEvent.type == event_type)
    return session.scalars(stmt.order_by(PatientEvent.event_date, PatientEvent.id)).all()


def samples(session: Session, patient_pk: int) -> Sequence[Sample]:
    return session.scalars(
        select(Sample)
        .where(Sample.patient_pk == patient_pk)
        .order_by(Sample.collection_date, Sample.id)
    ).all()


OVERVIEW_SORTS = ("attention", "patient", "last_draw", "status")
OVERVIEW_STATUSES = (*MRD_PATIENT_STATUSES, "resistance")


def overview(
    session: Session,
    site: str,
    *,
    query: str | None,
    sort: str,
    offset: int,
    limit: int,
    status: str | None = None,
) -> tuple[int, list[dict[str, object]]]:
    """One page of the site's patient list: processed samples (and the failed and retracted
    ones, apart), last processed plasma draw, MRD status, emerging resistance and current
    therapy per patient, in three queries whatever the page size (no N+1). The last draw is a
    correlated subquery on ix_samples_patient_date, evaluated for the site's patients only
    (not an aggregate of every sample of every site on each page view); the two statuses are
    joined on the analyses' (patient_pk, kind) unique index.

    Sorts: `attention` (positive or emerging resistance first, then indeterminate, negative,
    not applicable; latest draw first within each), `patient`, `last_draw` (latest first),
    `status`. `status` filters on one MRD status, or `resistance` for emerging resistance."""
    last_draw = (
        select(func.max(Sample.collection_date))
        .where(
            Sample.patient_pk == Patient.id,
            Sample.sample_type == "plasma",
            Sample.status == "processed",
        )
        .scalar_subquery()
    )

    mrd_row, resistance_row = aliased(PatientAnalysis), aliased(PatientAnalysis)
    mrd, resistance = mrd_row.status, resistance_row.status
    mrd_or_na = func.coalesce(mrd, "not_applicable")
    where = [Patient.site == site]
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(Patient.patient_id.ilike(f"%{escaped}%", escape="\\"))
    if status == "resistance":
        where.append(resistance == "emerging")
    elif status:
        where.append(mrd_or_na == status)
    patients = (
        select(Patient)
        .outerjoin(mrd_row, and_(mrd_row.patient_pk == Patient.id, mrd_row.kind == "mrd"))
        .outerjoin(
            resistance_row,
            and_(resistance_row.patient_pk == Patient.id, resistance_row.kind == "resistance"),
        )
        .where(*where)
    )
    total = session.scalar(patients.with_only_columns(func.count())) or 0
    rank = case(
        {"positive": 0, "positive_unconfirmed": 1, "indeterminate": 2, "negative": 3},
        value=mrd_or_na,
        else_=4,
    )
    urgent = case((resistance == "emerging", 0), else_=rank)
    orders: dict[str, list[Any]] = {
        "attention": [urgent, rank, last_draw.desc().nulls_last(), Patient.patient_id],
        "patient": [Patient.patient_id],
        "last_draw": [last_draw.desc().nulls_last(), Patient.patient_id],
        "status": [rank, Patient.patient_id],
    }
    stmt = (
        patients.with_only_columns(Patient.id, Patient.patient_id, last_draw, mrd, resistance)
        .order_by(*orders[sort])
        .offset(offset)
        .limit(limit)
    )
    rows = session.execute(stmt).all()
    therapy: dict[int, list[str]] = {r[0]: [] for r in rows}
    if therapy:
        for event in session.execute(
            select(
                PatientEvent.patient_pk,
                PatientEvent.type,
                PatientEvent.drug,
                PatientEvent.drug_class,
            )
            .where(
                PatientEvent.patient_pk.in_(therapy),
                PatientEvent.type.in_(("therapy_start", "therapy_stop")),
            )
            .order_by(PatientEvent.patient_pk, PatientEvent.event_date, PatientEvent.id)
        ):
            current = therapy[event.patient_pk]
            name = event.drug or event.drug_class or "?"
            if event.type == "therapy_start":
                current.append(name)
            elif name in current:
                current.remove(name)
    counts = samples_by_status(session, list(therapy))
    items: list[dict[str, object]] = [
        {
            "patient_id": r[1],
            "samples": counts.get(r[0], {}).get("processed", 0),
            "failed": counts.get(r[0], {}).get("failed", 0),
            "retracted": counts.get(r[0], {}).get("retracted", 0),
            "last_draw": r[2],
            "mrd_status": r[3] or "not_applicable",
            "resistance": r[4],
            "therapy": therapy[r[0]],
        }
        for r in rows
    ]
    return total, items
