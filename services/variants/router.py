"""HTTP edge for the patient's tracked variants."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request

from schemas.variants import TrackedVariantList, TrackedVariantRead, TrackedVariantsPut
from services.api.deps import Ingestor, Reader, SessionDep
from services.audit.service import audit
from services.genomics.types import Locus
from services.patients.service import get_patient_or_raise
from services.variants import service
from services.variants.models import TrackedVariant

router = APIRouter(prefix="/v1/patients", tags=["tracked variants"])


@router.get("/{patient_id}/tracked-variants", response_model=TrackedVariantList)
def get_tracked(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> TrackedVariantList:
    patient = get_patient_or_raise(session, principal.site, patient_id)
    audit(session, request, principal, patient_id=patient.patient_id)
    return _list(patient.patient_id, service.list_tracked(session, patient))


@router.put("/{patient_id}/tracked-variants", response_model=TrackedVariantList)
def put_tracked(
    patient_id: str,
    body: TrackedVariantsPut,
    principal: Ingestor,
    session: SessionDep,
    request: Request,
) -> TrackedVariantList:
    patient = get_patient_or_raise(session, principal.site, patient_id)
    service.set_tracked(session, patient, body.variants)
    audit(session, request, principal, patient_id=patient.patient_id)
    return _list(patient.patient_id, service.list_tracked(session, patient))


def _list(patient_id: str, rows: Sequence[TrackedVariant]) -> TrackedVariantList:
    items = []
    for row in rows:
        locus = Locus.parse(row.locus_key)
        items.append(
            TrackedVariantRead(
                locus_key=row.locus_key,
                chrom=locus.chrom,
                pos=locus.pos,
                ref=locus.ref,
                alt=locus.alt,
                gene=row.gene,
                protein_change=row.protein_change,
                tumor_af=row.tumor_af,
                source=row.source,  # type: ignore[arg-type]
                kept=row.kept,
                reason=row.reason,
            )
        )
    return TrackedVariantList(patient_id=patient_id, items=items)
