"""Queries on samples and their variant rows; every lookup is scoped to a site."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.jobs.models import Job
from services.pagination import Keyset, PageRequest
from services.patients.models import Patient
from services.samples.models import Sample
from services.variants.models import Variant


def get(session: Session, site: str, sample_id: str) -> Sample | None:
    return session.scalar(select(Sample).where(Sample.site == site, Sample.sample_id == sample_id))


def get_with_patient(session: Session, site: str, sample_id: str) -> tuple[Sample, Patient] | None:
    row = session.execute(
        select(Sample, Patient)
        .join(Patient, Patient.id == Sample.patient_pk)
        .where(Sample.site == site, Sample.sample_id == sample_id)
    ).first()
    return (row[0], row[1]) if row else None


def find_same_bytes(
    session: Session, patient_pk: int, sha256: str, sample_id: str
) -> Sample | None:
    """The patient's sample with these bytes, the one named `sample_id` first."""
    return session.scalar(
        select(Sample)
        .where(Sample.patient_pk == patient_pk, Sample.file_sha256 == sha256)
        .order_by((Sample.sample_id == sample_id).desc(), Sample.id)
        .limit(1)
    )


def latest_job(session: Session, sample_pk: int) -> Job | None:
    return session.scalar(
        select(Job).where(Job.sample_pk == sample_pk).order_by(Job.created_at.desc()).limit(1)
    )


# By position, on the (sample_pk, chrom, pos, ref, alt) unique index.
VARIANTS = Keyset("variants", (Variant.chrom, Variant.pos, Variant.ref, Variant.alt))


def variants(
    session: Session, sample_pk: int, page: PageRequest
) -> tuple[list[Variant], str | None]:
    """One page of a sample's variant rows by position, and the next page's cursor."""
    stmt = VARIANTS.select_page(select(Variant).where(Variant.sample_pk == sample_pk), page)
    return VARIANTS.paginate(session.scalars(stmt).all(), page)
