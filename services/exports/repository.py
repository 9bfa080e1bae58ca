"""Batched reads for the exports: a patient, or a whole site in chunks of patients.

A study export covers every patient of a site, so nothing here is per patient: each chunk of
`CHUNK` patients costs the same five queries (patients, samples, events, analyses, variants)
whatever its size, and memory stays bounded by the chunk, not by the site."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.analysis.models import PatientAnalysis
from services.patients.models import Patient, PatientEvent
from services.samples.models import Sample
from services.variants.models import Variant

CHUNK = 500

# The variant columns an export writes (Core rows, not ORM objects: a study has many).
VARIANT_COLUMNS = (
    Variant.sample_pk,
    Variant.chrom,
    Variant.pos,
    Variant.ref,
    Variant.alt,
    Variant.build,
    Variant.locus_key,
    Variant.gene,
    Variant.protein_change,
    Variant.filter,
    Variant.passed,
    Variant.detected,
    Variant.alt_reads,
    Variant.depth,
    Variant.vaf,
    Variant.quantitative,
    Variant.normal_alt_reads,
    Variant.normal_depth,
    Variant.hotspot,
    Variant.in_monitored_gene,
    Variant.tracked,
)


@dataclass
class PatientExport:
    """One patient with everything an export writes about it."""

    patient: Patient
    samples: list[Sample] = field(default_factory=list)
    events: list[PatientEvent] = field(default_factory=list)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: dict[int, list[Any]] = field(default_factory=dict)  # sample pk -> Core rows

    @property
    def patient_id(self) -> str:
        return self.patient.patient_id


def load_patient(
    session: Session, site: str, patient_id: str, *, detected_only: bool = False
) -> PatientExport | None:
    """The site's patient with its samples, events, analyses and variant rows; None when the
    site has no such patient (another site's patient is not found, on purpose)."""
    patient = session.scalar(
        select(Patient).where(Patient.site == site, Patient.patient_id == patient_id)
    )
    if patient is None:
        return None
    return _fill([patient], session, detected_only=detected_only)[0]


def iter_site(
    session: Session,
    site: str,
    *,
    detected_only: bool = True,
    variants: bool = True,
    chunk: int = CHUNK,
) -> Iterator[PatientExport]:
    """Every patient of the site, ordered by patient_id, loaded `chunk` patients at a time
    (without variant rows when `variants` is false)."""
    after: str | None = None
    while True:
        stmt = select(Patient).where(Patient.site == site).order_by(Patient.patient_id).limit(chunk)
        if after is not None:
            stmt = stmt.where(Patient.patient_id > after)
        patients = list(session.scalars(stmt))
        if not patients:
            return
        yield from _fill(patients, session, detected_only=detected_only, variants=variants)
        after = patients[-1].patient_id


def _fill(
    patients: Sequence[Patient], session: Session, *, detected_only: bool, variants: bool = True
) -> list[PatientExport]:
    out = {p.id: PatientExport(p) for p in patients}
    pks = list(out)
    samples: dict[int, Sample] = {}
    # A retracted sample is no data of the patient's (it stays readable through the API).
    for sample in session.scalars(
        select(Sample)
        .where(Sample.patient_pk.in_(pks), Sample.status != "retracted")
        .order_by(Sample.collection_date, Sample.sample_id)
    ):
        out[sample.patient_pk].samples.append(sample)
        samples[sample.id] = sample
    for event in session.scalars(
        select(PatientEvent)
        .where(PatientEvent.patient_pk.in_(pks))
        .order_by(PatientEvent.event_date, PatientEvent.id)
    ):
        out[event.patient_pk].events.append(event)
    for patient_pk, kind, body in session.execute(
        select(PatientAnalysis.patient_pk, PatientAnalysis.kind, PatientAnalysis.body).where(
            PatientAnalysis.patient_pk.in_(pks),
            PatientAnalysis.kind.in_(("mrd", "trends", "resistance")),
        )
    ):
        out[patient_pk].bodies[kind] = json.loads(body)
    if not variants:
        return list(out.values())
    by_sample: dict[int, list[Any]] = defaultdict(list)
    stmt = (
        select(*VARIANT_COLUMNS)
        .join(Sample, Sample.id == Variant.sample_pk)
        .where(Sample.patient_pk.in_(pks))
        .order_by(Variant.sample_pk, Variant.chrom, Variant.pos, Variant.ref, Variant.alt)
    )
    if detected_only:
        stmt = stmt.where(Variant.detected.is_(True))
    for row in session.execute(stmt):
        by_sample[row.sample_pk].append(row)
    for sample_pk, rows in by_sample.items():
        out[samples[sample_pk].patient_pk].variants[sample_pk] = rows
    return list(out.values())
