"""`ctdna demo` and `ctdna simulate`: simulated patients with known truth, written as real VCF
files and loaded through the service layer (the same storage, sample, job and ingest code as
an upload), so the web view and the API have something to show at once.

Two kinds of patient: early breast cancer after surgery (tumour-informed MRD; some relapse)
and metastatic ER+ disease on letrozole + palbociclib in whom an ESR1 D538G clone emerges."""

from __future__ import annotations

import csv
import datetime as dt
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import structlog
from sqlalchemy import or_, select

from schemas.patients import EventCreate
from services import outbox
from services.analysis.service import CLONES_TASK, RECOMPUTE_TASK, run_clones, run_recompute
from services.config import get_settings
from services.db import unit_of_work
from services.genomics.simulate import (
    Cohort,
    SimulationParams,
    simulate_cohort,
    write_plasma_vcf,
    write_records,
    write_tissue_vcf,
)
from services.genomics.simulate_metastatic import simulate_metastatic_patient, write_panel_vcf
from services.genomics.types import Locus
from services.jobs import service as jobs
from services.jobs.models import Job
from services.patients import service as patients
from services.patients.repository import events as patient_events
from services.samples import ingest, storage
from services.samples import service as samples
from services.samples.models import Sample

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ManifestRow:
    patient_id: str
    sample_id: str
    sample_type: str
    collection_date: dt.date
    path: Path


@dataclass(frozen=True, slots=True)
class DemoPatient:
    patient_id: str
    events: tuple[EventCreate, ...]
    samples: tuple[ManifestRow, ...]
    truth: dict[str, object]


def write_mrd_cohort(
    folder: Path,
    *,
    patients_n: int,
    draws: int,
    seed: int,
    prefix: str = "",
    params: SimulationParams | None = None,
) -> list[DemoPatient]:
    """Post-surgery patients: a tumour tissue VCF and serial force-called plasma VCFs, after
    the lab's panel of normals (normal plasmas of the same assay at every tracked locus: the
    background the MRD calls need from the first draw). Patient and sample ids are the
    simulator's, after `prefix`."""
    folder.mkdir(parents=True, exist_ok=True)
    cohort = simulate_cohort(patients_n, draws, np.random.default_rng(seed), params)
    out: list[DemoPatient] = [_panel_of_normals(folder, cohort, prefix)]
    for patient in cohort.patients:
        tissue = folder / f"{patient.tissue_sample_id}.vcf.gz"
        write_tissue_vcf(tissue, patient)
        patient_id = prefix + patient.patient_id
        rows = [
            ManifestRow(
                patient_id,
                prefix + patient.tissue_sample_id,
                "tissue",
                patient.surgery_date,
                tissue,
            )
        ]
        for draw in patient.draws:
            path = folder / f"{draw.sample_id}.vcf.gz"
            write_plasma_vcf(path, draw, patient)
            rows.append(
                ManifestRow(
                    patient_id, prefix + draw.sample_id, "plasma", draw.collection_date, path
                )
            )
        events = [EventCreate(type="surgery", date=patient.surgery_date)]
        if patient.clinical_relapse_date is not None:
            events.append(EventCreate(type="clinical_relapse", date=patient.clinical_relapse_date))
        out.append(
            DemoPatient(
                patient_id,
                tuple(events),
                tuple(rows),
                {
                    "relapsing": patient.relapsing,
                    "clinical_relapse_date": patient.clinical_relapse_date,
                    "dialect": patient.dialect,
                    "true_fractions": {
                        prefix + d.sample_id: d.true_fraction for d in patient.draws
                    },
                },
            )
        )
    return out


PANEL_OF_NORMALS = "PANEL-OF-NORMALS"
PON_SAMPLES = 6


def _panel_of_normals(folder: Path, cohort: Cohort, prefix: str) -> DemoPatient:
    """``PON_SAMPLES`` normal plasmas, force-called at every locus the cohort tracks, from the
    simulator's control panel; filed under a patient of their own, loaded first."""
    keys = sorted(key for key, rows in cohort.controls.items() if len(rows) >= PON_SAMPLES)
    rows = []
    for index in range(PON_SAMPLES):
        records = []
        for key in keys:
            locus = Locus.parse(key)
            counts = cohort.controls[key][index]
            records.append(
                (
                    locus.chrom,
                    locus.pos,
                    locus.ref,
                    locus.alt,
                    counts.alt_reads,
                    counts.depth,
                    "PASS",
                )
            )
        sample_id = f"{prefix}PON-{index + 1:02d}"
        path = write_records(
            folder / f"PON-{index + 1:02d}.vcf.gz", sample_id, records, cohort.params
        )
        rows.append(
            ManifestRow(prefix + PANEL_OF_NORMALS, sample_id, "normal", SIMULATED_PON_DATE, path)
        )
    return DemoPatient(prefix + PANEL_OF_NORMALS, (), tuple(rows), {"panel_of_normals": True})


SIMULATED_PON_DATE = dt.date(2022, 1, 3)


def write_metastatic(
    folder: Path, *, patients_n: int, seed: int, prefix: str = ""
) -> list[DemoPatient]:
    """Patients on an aromatase inhibitor with an emerging ESR1 clone (hotspot panels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: list[DemoPatient] = []
    for index in range(1, patients_n + 1):
        patient = simulate_metastatic_patient(f"MET-{index:03d}", rng)
        patient_id = prefix + patient.patient_id
        rows = []
        for draw in patient.draws:
            path = folder / f"{draw.sample_id}.vcf.gz"
            write_panel_vcf(path, draw)
            rows.append(
                ManifestRow(
                    patient_id, prefix + draw.sample_id, "plasma", draw.collection_date, path
                )
            )
        events = tuple(
            EventCreate(type="therapy_start", date=patient.therapy_start, drug=drug)
            for drug in patient.drugs
        )
        emerging = patient.emerging
        assert emerging is not None  # the default simulation always has an emerging clone
        out.append(
            DemoPatient(
                patient_id,
                events,
                tuple(rows),
                {
                    "first_visible_draw": patient.first_visible_draw,
                    "emerging": f"{emerging.gene} {emerging.protein}",
                },
            )
        )
    return out


EVENT_COLUMNS = ("patient_id", "type", "date", "drug", "drug_class", "note")


def write_manifest(folder: Path, cohort: Sequence[DemoPatient]) -> Path:
    """manifest.csv (one row per VCF), events.csv (the clinical events: surgery, therapy
    lines, relapse; `ctdna submit FOLDER` posts them before the samples) and truth.json (per
    patient: what the simulator knows, including the caller dialect its VCFs were written
    in)."""
    truth = {patient.patient_id: patient.truth for patient in cohort}
    (folder / "truth.json").write_text(json.dumps(truth, indent=2, default=str) + "\n")
    with (folder / "events.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(EVENT_COLUMNS)
        for patient in cohort:
            for event in patient.events:
                writer.writerow(
                    [
                        patient.patient_id,
                        event.type,
                        event.date.isoformat(),
                        event.drug or "",
                        event.drug_class or "",
                        event.note or "",
                    ]
                )
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["patient_id", "sample_id", "sample_type", "collection_date", "file"])
        for patient in cohort:
            for row in patient.samples:
                writer.writerow(
                    [
                        row.patient_id,
                        row.sample_id,
                        row.sample_type,
                        row.collection_date.isoformat(),
                        row.path.name,
                    ]
                )
    return manifest


def load(
    cohort: Sequence[DemoPatient], *, site: str, on_sample: Callable[[str, str], None] | None = None
) -> int:
    """Create the patients, their clinical events and samples through the service layer and
    run each ingest job in this process. Returns the number of samples loaded.

    Real uploads come first: nothing of the demo is sent to the workers (outbox.run_here),
    and before each sample the loader waits while a sample of another patient is queued, so
    an upload made while the demo loads never waits behind it."""
    settings = get_settings()
    loaded = 0
    demo_pks: list[int] = []
    with outbox.run_here():
        for patient in cohort:
            with unit_of_work() as session:
                record = patients.get_or_create_patient(session, site, patient.patient_id)
                if not patient_events(session, record.id):
                    for event in patient.events:
                        patients.add_event(session, record, event)
                demo_pks.append(record.id)
            for row in sorted(
                patient.samples, key=lambda r: (r.sample_type != "tissue", r.collection_date)
            ):
                _wait_for_uploads(demo_pks)
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
                if row.sample_type == "tissue":
                    # The tracked set it proposed re-extracts the panel of normals at its loci:
                    # done before the draws, so that their calls have that background.
                    _drain_reextractions(demo_pks)
                if on_sample is not None:
                    on_sample(row.patient_id, row.sample_id)
            _drain_reextractions(demo_pks)
    return loaded


def _wait_for_uploads(demo_pks: Sequence[int], poll_seconds: float = 0.5) -> None:
    while True:
        with unit_of_work() as session:
            if not jobs.ingest_queued_outside(session, demo_pks):
                return
        time.sleep(poll_seconds)


def _drain_reextractions(demo_pks: Sequence[int]) -> None:
    """Run, here, the jobs the loaded samples created (re-extractions after a tracked set
    was chosen from tissue, recomputes after the assay's background model changed, clone
    fits); never another patient's."""
    runners: dict[str, Callable[[str], str]] = {
        jobs.INGEST_TASK: ingest.run,
        RECOMPUTE_TASK: run_recompute,
        CLONES_TASK: partial(run_clones, defer=False),
    }
    while True:
        with unit_of_work() as session:
            queued = session.execute(
                select(Job.id, Job.task)
                .outerjoin(Sample, Sample.id == Job.sample_pk)
                .where(
                    Job.status == "queued",
                    Job.task.in_(runners),
                    or_(Job.patient_pk.in_(demo_pks), Sample.patient_pk.in_(demo_pks)),
                )
                .order_by(Job.created_at)
            ).all()
        if not queued:
            return
        for job_id, task in queued:
            runners[task](job_id)


def write_demo(
    folder: Path, *, patients_n: int, draws: int, seed: int, prefix: str = ""
) -> list[DemoPatient]:
    metastatic_n = max(1, patients_n // 4)
    return [
        *write_mrd_cohort(
            folder, patients_n=patients_n - metastatic_n, draws=draws, seed=seed, prefix=prefix
        ),
        *write_metastatic(folder, patients_n=metastatic_n, seed=seed + 1, prefix=prefix),
    ]


def demo(
    site: str,
    *,
    patients_n: int = 12,
    draws: int = 6,
    seed: int = 2026,
    on_sample: Callable[[str, str], None] | None = None,
) -> int:
    with tempfile.TemporaryDirectory(prefix="ctdna-demo-") as tmp:
        cohort = write_demo(Path(tmp), patients_n=patients_n, draws=draws, seed=seed)
        return load(cohort, site=site, on_sample=on_sample)
