"""HTTP edge for the precomputed analyses: returns the stored JSON bodies as they are (no ORM
objects or response models on the hot read path).

These are the most frequent reads (trend plots, MRD status), so each is one trip to the thread
pool: the key comes from the principal cache on the event loop, then one unit of work reads the
patient and its body in a single query and writes the audit row."""

from __future__ import annotations

import json

import anyio
from fastapi import APIRouter, Request, Response, status

from schemas.amendments import AmendmentList, AmendmentRead
from schemas.analyses import ClonesBody, MrdBody, TrendsBody
from schemas.samples import JobRead
from services.analysis import amendments, repository
from services.analysis.service import NOT_APPLICABLE, request_recompute
from services.api.deps import Ingestor, Reader, SessionDep
from services.audit.service import allowed_row, audit
from services.auth.service import Principal
from services.db import READ_POOL_SIZE
from services.errors import NotFound
from services.patients.service import get_patient_or_raise

router = APIRouter(prefix="/v1/patients", tags=["analyses"])

EMPTY: dict[str, dict[str, object]] = {
    "mrd": {
        "status": NOT_APPLICABLE,
        "reason": "no sample processed yet",
        "calls": [],
        "molecular_relapse_date": None,
        "lead_time_days": None,
        "amendments": [],
    },
    "trends": {"samples": [], "variants": [], "responses": []},
    "clones": {"clones": []},
    "resistance": {"events": [], "variants": [], "amendments": []},
}


# At most as many reads in threads as their pool has connections (services.db.READ_POOL_SIZE).
_READS = anyio.CapacityLimiter(READ_POOL_SIZE)


def _read(kind: str, patient_id: str, principal: Principal, request: Request) -> str:
    row = allowed_row(request, principal, patient_id=patient_id)
    found = repository.read_and_audit(kind, row)
    if found is None:
        raise NotFound(f"patient {patient_id!r} not found")
    stored_id, body = found
    return body or json.dumps({"patient_id": stored_id, **EMPTY[kind]})


async def _serve(kind: str, patient_id: str, principal: Principal, request: Request) -> Response:
    body = await anyio.to_thread.run_sync(
        _read, kind, patient_id, principal, request, limiter=_READS
    )
    return Response(content=body, media_type="application/json")


@router.get(
    "/{patient_id}/mrd",
    summary="Tumour-informed MRD calls after surgery",
    responses={200: {"model": MrdBody, "description": "The stored MRD body"}},
)
async def get_mrd(patient_id: str, principal: Reader, request: Request) -> Response:
    """`{status, calls: [{sample_id, collection_date, call, score, p_value, tumor_fraction,
    lod95, loci_detected, loci_tracked, informative_reads, ..., amendments}],
    molecular_relapse_date, lead_time_days, amendments}`.

    A call, once computed, is issued: it stays as it was (numbers included) until its `call`
    changes; then the new call is shown and its `amendments` list what had been issued
    before, why it changed (the reason the analyses were recomputed), when, and under which
    method version. The body's `amendments` add those of `status` and
    `molecular_relapse_date`. A call withdrawn (its sample retracted or moved) leaves the
    calls; its record is in `GET /v1/patients/{patient_id}/amendments`."""
    return await _serve("mrd", patient_id, principal, request)


@router.get(
    "/{patient_id}/trends",
    summary="Tumour fraction and per-variant VAF series",
    responses={200: {"model": TrendsBody, "description": "The stored trends body"}},
)
async def get_trends(patient_id: str, principal: Reader, request: Request) -> Response:
    return await _serve("trends", patient_id, principal, request)


@router.get(
    "/{patient_id}/clones",
    summary="Clones with member variants and CCF series",
    responses={200: {"model": ClonesBody, "description": "The stored clones body"}},
)
async def get_clones(patient_id: str, principal: Reader, request: Request) -> Response:
    return await _serve("clones", patient_id, principal, request)


@router.get("/{patient_id}/resistance", summary="Emerging resistance events on therapy")
async def get_resistance(patient_id: str, principal: Reader, request: Request) -> Response:
    """`{events: [{gene, protein_change, status, first_detected_date, drug_class,
    implication, ..., amendments}], variants, current_therapy, amendments}`: an event, once
    issued, stays as it was until its status, first detection date or implication changes;
    its `amendments` then list what had been issued and why it changed."""
    return await _serve("resistance", patient_id, principal, request)


@router.get(
    "/{patient_id}/amendments",
    response_model=AmendmentList,
    summary="Every amendment of the patient's issued results",
)
def get_amendments(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> AmendmentList:
    """The full record, oldest first: each MRD call, patient status, molecular relapse date
    or resistance event that changed after it had been issued, withdrawn ones included
    (`current` null), with the whole issued result, the reason, the time and the method
    version."""
    patient = get_patient_or_raise(session, principal.site, patient_id)
    audit(session, request, principal, patient_id=patient.patient_id)
    return AmendmentList(
        patient_id=patient.patient_id,
        items=[AmendmentRead.model_validate(a) for a in amendments.history_of(session, patient.id)],
    )


@router.post(
    "/{patient_id}/recompute",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRead,
    summary="Queue a recompute of the patient's analyses",
)
def post_recompute(
    patient_id: str, principal: Ingestor, session: SessionDep, request: Request
) -> JobRead:
    """Analyses are recomputed by themselves when a sample, an event, a tracked set or a new
    background arrives; this asks for it explicitly (e.g. after an upgrade of the method). The
    `patients.recompute` job is coalesced: asking again before it ran returns the same job."""
    patient = get_patient_or_raise(session, principal.site, patient_id)
    job = request_recompute(session, patient, "recompute requested")
    audit(session, request, principal, patient_id=patient.patient_id)
    return JobRead(
        job_id=job.id,
        task=job.task,
        status=job.status,  # type: ignore[arg-type]
        attempts=job.attempts,
        created_at=job.created_at,
    )
