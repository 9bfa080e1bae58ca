"""HTTP edge for job status."""

from __future__ import annotations

from fastapi import APIRouter, Request

from schemas.samples import JobRead
from services.api.deps import Reader, SessionDep
from services.audit.service import audit
from services.errors import NotFound
from services.jobs import repository

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobRead)
def get_job(job_id: str, principal: Reader, session: SessionDep, request: Request) -> JobRead:
    job = repository.get_for_site(session, job_id, principal.site)
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    patient_id, sample_id = repository.subject(session, job)
    audit(session, request, principal, patient_id=patient_id, sample_id=sample_id)
    return JobRead(
        job_id=job.id,
        task=job.task,
        status=job.status,  # type: ignore[arg-type]
        error=job.error,
        sample_id=sample_id,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        progress=job.progress,
        workers_lost=job.workers_lost,
    )
