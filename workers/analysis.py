"""patients.recompute (a patient's analyses, coalesced: on a new background, on request) and
patients.clones (the clone fit, coalesced, after ingests)."""

from __future__ import annotations

from services.analysis.service import CLONES_TASK, RECOMPUTE_TASK, run_clones, run_recompute
from workers.celery_app import app


@app.task(name=RECOMPUTE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def recompute_patient(job_id: str) -> str:
    return run_recompute(job_id)


@app.task(name=CLONES_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fit_patient_clones(job_id: str) -> str:
    return run_clones(job_id)
