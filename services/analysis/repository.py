"""Queries on the stored analyses."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, and_, bindparam, select, text
from sqlalchemy.orm import Session

from services.analysis.models import PatientAnalysis
from services.audit.models import AuditEntry
from services.db import get_statement_engine, run_statement, unit_of_work
from services.patients.models import Patient

# A declarative class's __table__ is typed as FromClause; it is the Table the class maps.
_AUDIT_INSERT = cast(Table, AuditEntry.__table__).insert()

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


# PostgreSQL: the patient, its body and the audit row of the read in one round trip (a
# data-modifying CTE runs whether or not the outer query reads it; no patient, no row, and the
# 404 is audited as a denial by the middleware).
_READ_AND_AUDIT = text(
    """
    WITH p AS (
        SELECT id, patient_id FROM patients WHERE site = :site AND patient_id = :patient_id
    ), a AS (
        INSERT INTO audit_log
            (at, site, key_id, method, route, patient_id, sample_id, status_code, outcome, client)
        SELECT :at, :site, :key_id, :method, :route, p.patient_id, NULL, :status_code,
               :outcome, :client
        FROM p
        RETURNING 1
    )
    SELECT p.patient_id, pa.body
    FROM p LEFT JOIN patient_analyses pa ON pa.patient_pk = p.id AND pa.kind = :kind
    """
)


def read_and_audit(kind: str, audit_row: dict[str, object]) -> tuple[str, str | None] | None:
    """patient_and_body() for the audit row's site and patient, with that row written in the
    same transaction: on PostgreSQL in the same statement, run on its own (autocommit) so that
    the read is one round trip; on the embedded SQLite default in one unit of work."""
    site, patient_id = audit_row["site"], audit_row["patient_id"]
    assert isinstance(site, str) and isinstance(patient_id, str)
    engine = get_statement_engine()
    if engine is not None:
        row = run_statement(engine, _READ_AND_AUDIT, {**audit_row, "kind": kind})
        return (row[0], row[1]) if row is not None else None
    with unit_of_work() as session:
        found = patient_and_body(session, site, patient_id, kind)
        if found is not None:
            session.connection().execute(_AUDIT_INSERT, {**audit_row, "patient_id": found[0]})
    return found
