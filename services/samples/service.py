"""Accepting uploads: one sample and one ingest job per distinct file of a patient."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy.orm import Session

from services.config import get_settings
from services.db import utcnow
from services.errors import Conflict, NotFound
from services.genomics.sniff import UploadCheck
from services.jobs import service as jobs
from services.jobs.models import Job
from services.patients import service as patients
from services.samples import repository, storage
from services.samples.models import Sample
from services.samples.storage import StoredFile


@dataclass(frozen=True, slots=True)
class SampleForm:
    patient_id: str
    sample_id: str
    collection_date: dt.date
    sample_type: str
    genome_build: str | None
    tumor_sample: str | None
    normal_sample: str | None
    plasma_ml: float | None
    cfdna_ng_per_ml: float | None
    file_name: str


@dataclass(frozen=True, slots=True)
class Accepted:
    sample: Sample
    job: Job
    created: bool


def store_upload(source: BinaryIO, file_name: str) -> StoredFile:
    """Keep the uploaded bytes under their sha256, refusing on the way anything that is not a
    VCF or BCF, over the size cap, or inflating past the decompression cap (nothing is kept
    then)."""
    settings = get_settings()
    check = UploadCheck(file_name, max_decompressed_bytes=settings.max_decompressed_bytes)
    return storage.store(
        source, settings.uploads_dir, max_bytes=settings.max_upload_bytes, check=check
    )


def accept_upload(session: Session, site: str, form: SampleForm, stored: StoredFile) -> Accepted:
    """Create the sample and its ingest job in the caller's transaction; the same bytes for
    the same patient return the existing sample and job, nothing duplicated."""
    patient = patients.get_or_create_patient(session, site, form.patient_id)
    same = repository.find_same_bytes(session, patient.id, stored.sha256)
    if same is not None:
        job = repository.latest_job(session, same.id)
        if job is None:  # a sample always gets a job at creation; keep the invariant anyway
            job = jobs.create_job(session, task=jobs.INGEST_TASK, site=site, sample_pk=same.id)
        return Accepted(sample=same, job=job, created=False)
    if repository.get(session, site, form.sample_id) is not None:
        raise Conflict(
            f"sample {form.sample_id!r} already exists with different file contents; "
            "use a new sample_id for a new file"
        )
    sample = Sample(
        site=site,
        sample_id=form.sample_id,
        patient_pk=patient.id,
        collection_date=form.collection_date,
        sample_type=form.sample_type,
        genome_build=form.genome_build,
        tumor_sample=form.tumor_sample,
        normal_sample=form.normal_sample,
        plasma_ml=form.plasma_ml,
        cfdna_ng_per_ml=form.cfdna_ng_per_ml,
        file_name=form.file_name,
        file_sha256=stored.sha256,
        file_size=stored.size,
        status="pending",
        created_at=utcnow(),
    )
    session.add(sample)
    session.flush()
    job = jobs.create_job(session, task=jobs.INGEST_TASK, site=site, sample_pk=sample.id)
    return Accepted(sample=sample, job=job, created=True)


def get_sample_or_raise(session: Session, site: str, sample_id: str) -> Sample:
    sample = repository.get(session, site, sample_id)
    if sample is None:
        raise NotFound(f"sample {sample_id!r} not found")
    return sample
