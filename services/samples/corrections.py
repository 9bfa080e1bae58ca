"""Corrections of a posted sample, each with a reason: its collection date, type, plasma
volume, cfDNA concentration, tumour/normal columns or patient (`correct`), or its retraction
(`retract`: kept and readable, its variant rows gone, out of every analysis).

Each correction triggers what it causes, in the caller's transaction: a re-extraction of the
file when what is read from it changed (type, columns, patient: the tracked loci differ), a
recompute of the analyses of the patients concerned otherwise, and a recompute of the other
patients for whom the sample was a background. Their amendments carry the reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from schemas.samples import SampleUpdate
from services.analysis import service as analysis
from services.db import utcnow
from services.errors import Conflict, NotFound
from services.jobs import service as jobs
from services.patients import service as patients
from services.patients.models import Patient
from services.samples import repository
from services.samples.models import Sample
from services.sites import service as sites
from services.variants.models import TrackedVariant, Variant

# What a correction may change, and whether the file must be read again for it.
FIELDS = (
    "collection_date",
    "sample_type",
    "plasma_ml",
    "cfdna_ng_per_ml",
    "tumor_sample",
    "normal_sample",
)
REREAD = frozenset({"sample_type", "tumor_sample", "normal_sample", "patient_id"})
REQUIRED = frozenset({"collection_date", "sample_type"})


@dataclass(frozen=True, slots=True)
class Corrected:
    sample: Sample
    patient: Patient  # where the sample is now
    previous_patient: Patient  # where it was (the same unless it moved)
    changes: dict[str, list[Any]]  # field: [before, after]


def _found(session: Session, site: str, sample_id: str) -> tuple[Sample, Patient]:
    found = repository.get_with_patient(session, site, sample_id)
    if found is None:
        raise NotFound(f"sample {sample_id!r} not found")
    return found


def correct(session: Session, site: str, sample_id: str, body: SampleUpdate) -> Corrected:
    """Apply the fields sent, refusing what cannot be true (a date after tomorrow or before
    1990, a patient of another site, a patient that already has these bytes)."""
    sample, patient = _found(session, site, sample_id)
    if sample.status == "retracted":
        raise Conflict(f"sample {sample_id!r} was retracted: it cannot be corrected")
    sent = body.model_fields_set
    changes: dict[str, list[Any]] = {}
    for name in FIELDS:
        value = getattr(body, name)
        if name not in sent or (value is None and name in REQUIRED):
            continue
        if isinstance(value, str):
            value = value.strip() or None
        if getattr(sample, name) != value:
            changes[name] = [getattr(sample, name), value]
    target = patient
    if body.patient_id is not None and body.patient_id != patient.patient_id:
        target = patients.get_patient_or_raise(session, site, body.patient_id)
        same = repository.find_same_bytes(session, target.id, sample.file_sha256, sample_id)
        if same is not None:
            raise Conflict(
                f"patient {target.patient_id!r} already has this file as sample {same.sample_id!r}"
            )
        changes["patient_id"] = [patient.patient_id, target.patient_id]
    if "collection_date" in changes:
        sites.check_collection_date(
            session, site, changes["collection_date"][1], what="collection_date"
        )
    if not changes:
        return Corrected(sample, patient, patient, changes)

    reason = f"correction of sample {sample_id} ({', '.join(changes)}): {body.reason}"
    reread = bool(REREAD & changes.keys())
    if reread:
        _no_longer_a_source(session, sample, patient, reason)
    for name in FIELDS:
        if name in changes:
            setattr(sample, name, changes[name][1])
    sample.patient_pk = target.id
    session.flush()
    if reread:
        # The ingest recomputes the analyses of the sample's patient once its rows are new.
        jobs.create_job(
            session, task=jobs.INGEST_TASK, site=site, sample_pk=sample.id, reason=reason
        )
    if not reread or target is not patient:
        analysis.recompute_safely(session, patient, reason)
    return Corrected(sample, target, patient, changes)


def retract(
    session: Session, site: str, sample_id: str, reason: str
) -> tuple[Sample, Patient, bool]:
    """Retract the sample (a second retraction changes nothing); returns it, its patient and
    whether it was retracted now."""
    sample, patient = _found(session, site, sample_id)
    if sample.status == "retracted":
        return sample, patient, False
    why = f"retraction of sample {sample_id}: {reason}"
    _no_longer_a_source(session, sample, patient, why)
    sample.status = "retracted"
    sample.retracted_at = utcnow()
    sample.retraction_reason = reason
    session.execute(delete(Variant).where(Variant.sample_pk == sample.id))
    session.flush()
    analysis.recompute_safely(session, patient, why)
    return sample, patient, True


def _no_longer_a_source(session: Session, sample: Sample, patient: Patient, reason: str) -> None:
    """What the sample's rows fed beyond its own draw stops: the tracked set its patient took
    from it (a tissue), and the backgrounds of the site's other patients (a normal, or a
    plasma as a cross-patient control), who are recomputed. Called before its rows change."""
    if sample.sample_type == "tissue":
        session.execute(
            delete(TrackedVariant).where(
                TrackedVariant.patient_pk == patient.id,
                TrackedVariant.source == "tissue",
                TrackedVariant.source_sample_pk == sample.id,
            )
        )
    elif sample.status == "processed":
        analysis.request_recompute_of_trackers(session, sample, reason)
