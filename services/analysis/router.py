"""HTTP edge for the precomputed analyses: returns the stored JSON bodies as they are (no ORM
objects or response models on the hot read path)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response

from services.analysis.service import NOT_APPLICABLE, stored_body
from services.api.deps import Reader, SessionDep
from services.audit.service import audit
from services.patients.service import get_patient_or_raise

router = APIRouter(prefix="/v1/patients", tags=["analyses"])

EMPTY: dict[str, dict[str, object]] = {
    "mrd": {
        "status": NOT_APPLICABLE,
        "reason": "no sample processed yet",
        "calls": [],
        "molecular_relapse_date": None,
        "lead_time_days": None,
    },
    "trends": {"samples": [], "variants": [], "responses": []},
    "clones": {"clones": []},
    "resistance": {"events": [], "variants": []},
}


def _serve(
    kind: str, patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> Response:
    patient = get_patient_or_raise(session, principal.site, patient_id)
    audit(session, request, principal, patient_id=patient.patient_id)
    body = stored_body(session, patient.id, kind)
    if body is None:
        body = json.dumps({"patient_id": patient.patient_id, **EMPTY[kind]})
    return Response(content=body, media_type="application/json")


@router.get("/{patient_id}/mrd", summary="Tumour-informed MRD calls after surgery")
def get_mrd(patient_id: str, principal: Reader, session: SessionDep, request: Request) -> Response:
    """`{status, calls: [{sample_id, collection_date, call, score, p_value, tumor_fraction,
    lod95, loci_detected, loci_tracked, informative_reads, ...}], molecular_relapse_date,
    lead_time_days}`."""
    return _serve("mrd", patient_id, principal, session, request)


@router.get("/{patient_id}/trends", summary="Tumour fraction and per-variant VAF series")
def get_trends(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> Response:
    return _serve("trends", patient_id, principal, session, request)


@router.get("/{patient_id}/clones", summary="Clones with member variants and CCF series")
def get_clones(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> Response:
    return _serve("clones", patient_id, principal, session, request)


@router.get("/{patient_id}/resistance", summary="Emerging resistance events on therapy")
def get_resistance(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> Response:
    return _serve("resistance", patient_id, principal, session, request)
