"""Queries on the stored analyses."""

from __future__ import annotations

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from services.analysis.models import PatientAnalysis
from services.patients.models import Patient

# Built once and run as Core on the session's connection: this is the hottest read of the API,
# and building the statement and going through the ORM result layer cost more than the query.
_PATIENT_AND_BODY = (
    select(Patient.patient_id, PatientAnalysis.body)
    .outerjoin(
        PatientAnalysis,
        and_(PatientAnalysis.patient_pk == Patient.id, PatientAnalysis.kind == bindparam("kind")),
    )
    .where(Patient.site == bindparam("site"), Patient.patient_id == bindparam("patient_id"))
)


def patient_and_body(
    session: Session, site: str, patient_id: str, kind: str
) -> tuple[str, str | None] | None:
    """(patient_id, stored JSON body or None) of a site's patient in one round trip (the unique
    indexes on patients (site, patient_id) and patient_analyses (patient_pk, kind)); None when
    the site has no such patient."""
    row = (
        session.connection()
        .execute(_PATIENT_AND_BODY, {"site": site, "patient_id": patient_id, "kind": kind})
        .first()
    )
    return (row[0], row[1]) if row is not None else None
