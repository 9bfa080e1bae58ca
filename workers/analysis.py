"""patients.clones: refit a patient's clones (coalesced, after ingests)."""

from __future__ import annotations

from services.analysis.service import CLONES_TASK, run_clones
from workers.celery_app import app


@app.task(name=CLONES_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fit_patient_clones(job_id: str) -> str:
    return run_clones(job_id)
