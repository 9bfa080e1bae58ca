"""The patient's tracked loci: set explicitly (PUT) or proposed from tumour tissue. A change of
the tracked set re-extracts every stored sample of the patient from its original file."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from schemas.variants import TrackedVariantIn
from services.db import utcnow
from services.errors import InvalidInput
from services.genomics.annotate import hotspot_for
from services.genomics.build import grch38_locus
from services.genomics.regions import gene_at
from services.genomics.types import Locus
from services.jobs import service as jobs
from services.patients.models import Patient
from services.samples.models import Sample
from services.variants.models import TrackedVariant


def resolve_locus(item: TrackedVariantIn) -> Locus:
    if item.locus_key is not None:
        try:
            return Locus.parse(item.locus_key)
        except ValueError as exc:
            raise InvalidInput(f"locus_key {item.locus_key!r}: {exc}") from exc
    assert item.chrom and item.pos and item.ref and item.alt
    locus = grch38_locus(item.chrom, item.pos, item.ref.upper(), item.alt.upper(), item.build)
    if locus is None:
        raise InvalidInput(
            f"{item.chrom}:{item.pos} {item.ref}>{item.alt} on {item.build} has no GRCh38 position"
        )
    return locus


def set_tracked(session: Session, patient: Patient, items: Sequence[TrackedVariantIn]) -> int:
    """Replace the tracked set with an explicit list; returns the number of re-extraction jobs
    queued. Concurrent replacements of one patient's set run one after the other (the patient
    row is locked first), so the last one wins whole: sets never merge."""
    loci: dict[str, tuple[Locus, TrackedVariantIn]] = {}
    for item in items:
        locus = resolve_locus(item)
        loci.setdefault(locus.key, (locus, item))
    session.execute(select(Patient.id).where(Patient.id == patient.id).with_for_update())
    session.execute(delete(TrackedVariant).where(TrackedVariant.patient_pk == patient.id))
    now = utcnow()
    for key, (locus, item) in loci.items():
        hotspot = hotspot_for(locus)
        gene = hotspot.gene if hotspot else gene_at("GRCh38", locus.chrom, locus.pos)
        protein = hotspot.protein_change if hotspot else None
        session.add(
            TrackedVariant(
                patient_pk=patient.id,
                locus_key=key,
                gene=item.gene or gene,
                protein_change=item.protein_change or protein,
                tumor_af=item.tumor_af,
                source="manual",
                kept=True,
                reason="set explicitly",
                created_at=now,
            )
        )
    session.flush()
    return reextract_patient(session, patient)


def reextract_patient(session: Session, patient: Patient) -> int:
    """Queue a re-extraction of every non-tissue sample of the patient at its new tracked loci
    (tissue proposes the set, it is not re-read for it), and of every normal sample of the site:
    a panel of normals is read at every locus the site tracks, so new loci get their controls.
    A sample whose ingest is already queued gets no second one: that ingest reads the tracked
    set when it starts, so a burst of changes costs one re-extraction per sample. Returns the
    number of jobs queued."""
    samples = session.scalars(
        select(Sample).where(
            Sample.status.not_in(("failed", "retracted")),
            (Sample.patient_pk == patient.id) & (Sample.sample_type != "tissue")
            | (Sample.site == patient.site)
            & (Sample.sample_type == "normal")
            & (Sample.patient_pk != patient.id),
        )
    ).all()
    waiting = jobs.samples_with_queued_ingest(session, [s.id for s in samples])
    queued = [s for s in samples if s.id not in waiting]
    for sample in queued:
        jobs.create_job(
            session,
            task=jobs.INGEST_TASK,
            site=sample.site,
            sample_pk=sample.id,
            reason=f"tracked loci of patient {patient.patient_id} changed",
        )
    return len(queued)


def list_tracked(session: Session, patient: Patient) -> Sequence[TrackedVariant]:
    return session.scalars(
        select(TrackedVariant)
        .where(TrackedVariant.patient_pk == patient.id)
        .order_by(TrackedVariant.kept.desc(), TrackedVariant.locus_key)
    ).all()
