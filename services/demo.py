"""`ctdna demo` and `ctdna simulate`: a simulated cohort with known truth, written as real VCF
files and loaded through the service layer (the same storage, sample, job and ingest code as
an upload), so the web view and the API have something to show at once."""

from __future__ import annotations

import csv
import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from sqlalchemy import select

from schemas.patients import EventCreate
from services.config import get_settings
from services.db import unit_of_work
from services.genomics.simulate import (
    Cohort,
    SimPatient,
    simulate_cohort,
    write_plasma_vcf,
    write_tissue_vcf,
)
from services.jobs.models import Job
from services.patients import service as patients
from services.patients.repository import events as patient_events
from services.samples import ingest, storage
from services.samples import service as samples

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ManifestRow:
    patient_id: str
    sample_id: str
    sample_type: str
    collection_date: dt.date
    path: Path


@dataclass(frozen=True, slots=True)
class Written:
    cohort: Cohort
    rows: tuple[ManifestRow, ...]
    manifest: Path


def write_cohort(folder: Path, *, patients_n: int, draws: int, seed: int) -> Written:
    """Simulate a cohort and write its tissue and plasma VCFs plus a manifest.csv (with the
    truth columns a test or a lab can check against)."""
    folder.mkdir(parents=True, exist_ok=True)
    cohort = simulate_cohort(patients_n, draws, np.random.default_rng(seed))
    rows: list[ManifestRow] = []
    for patient in cohort.patients:
        tissue = folder / f"{patient.tissue_sample_id}.vcf.gz"
        write_tissue_vcf(tissue, patient)
        rows.append(
            ManifestRow(
                patient.patient_id, patient.tissue_sample_id, "tissue", patient.surgery_date, tissue
            )
        )
        for draw in patient.draws:
            path = folder / f"{draw.sample_id}.vcf.gz"
            write_plasma_vcf(path, draw, patient)
            rows.append(
                ManifestRow(
                    patient.patient_id, draw.sample_id, "plasma", draw.collection_date, path
                )
            )
    manifest = folder / "manifest.csv"
    truth = {p.patient_id: p for p in cohort.patients}
    with manifest.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            [
                "patient_id",
                "sample_id",
                "sample_type",
                "collection_date",
                "file",
                "surgery_date",
                "relapsing",
                "clinical_relapse_date",
            ]
        )
        for row in rows:
            patient = truth[row.patient_id]
            writer.writerow(
                [
                    row.patient_id,
                    row.sample_id,
                    row.sample_type,
                    row.collection_date.isoformat(),
                    row.path.name,
                    patient.surgery_date.isoformat(),
                    patient.relapsing,
                    patient.clinical_relapse_date or "",
                ]
            )
    return Written(cohort, tuple(rows), manifest)


def load(
    written: Written, *, site: str, on_sample: Callable[[str, str], None] | None = None
) -> int:
    """Create the patients, their clinical events and samples through the service layer and
    run each ingest job in this process. Returns the number of samples loaded."""
    settings = get_settings()
    by_patient: dict[str, list[ManifestRow]] = {}
    for row in written.rows:
        by_patient.setdefault(row.patient_id, []).append(row)
    loaded = 0
    for patient in written.cohort.patients:
        with unit_of_work() as session:
            record = patients.get_or_create_patient(session, site, patient.patient_id)
            if not patient_events(session, record.id):
                for event in clinical_events(patient):
                    patients.add_event(session, record, event)
        for row in sorted(
            by_patient[patient.patient_id],
            key=lambda r: (r.sample_type != "tissue", r.collection_date),
        ):
            with row.path.open("rb") as fh:
                stored = storage.store(
                    fh, settings.uploads_dir, max_bytes=settings.max_upload_bytes
                )
            form = samples.SampleForm(
                patient_id=row.patient_id,
                sample_id=row.sample_id,
                collection_date=row.collection_date,
                sample_type=row.sample_type,
                genome_build="GRCh38",
                tumor_sample=None,
                normal_sample=None,
                plasma_ml=4.0 if row.sample_type == "plasma" else None,
                cfdna_ng_per_ml=6.0 if row.sample_type == "plasma" else None,
                file_name=row.path.name,
            )
            with unit_of_work() as session:
                accepted = samples.accept_upload(session, site, form, stored)
                job_id, created = accepted.job.id, accepted.created
            if created:
                ingest.run(job_id)
                loaded += 1
            if on_sample is not None:
                on_sample(row.patient_id, row.sample_id)
        _drain_reextractions(site)
    return loaded


def clinical_events(patient: SimPatient) -> list[EventCreate]:
    events = [EventCreate(type="surgery", date=patient.surgery_date)]
    if patient.clinical_relapse_date is not None:
        events.append(EventCreate(type="clinical_relapse", date=patient.clinical_relapse_date))
    return events


def _drain_reextractions(site: str) -> None:
    """Run, here, the re-extraction jobs a tissue sample's tracked set created."""
    while True:
        with unit_of_work() as session:
            queued = session.scalars(
                select(Job.id)
                .where(Job.site == site, Job.status == "queued", Job.task == "samples.ingest")
                .order_by(Job.created_at)
            ).all()
        if not queued:
            return
        for job_id in queued:
            ingest.run(job_id)


def demo(
    site: str,
    *,
    patients_n: int = 12,
    draws: int = 6,
    seed: int = 2026,
    on_sample: Callable[[str, str], None] | None = None,
) -> int:
    with tempfile.TemporaryDirectory(prefix="ctdna-demo-") as tmp:
        written = write_cohort(Path(tmp), patients_n=patients_n, draws=draws, seed=seed)
        return load(written, site=site, on_sample=on_sample)
