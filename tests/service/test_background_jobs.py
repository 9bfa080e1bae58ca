"""Background analyses yield to waiting samples: a clone fit claimed while an ingest is queued
goes back to the queue (the sweep re-sends it), and runs once no sample waits, or once it has
waited CLONES_MAX_DEFER_SECONDS. In-process against the session's PostgreSQL database (real
migrations, a database per test); the Redis database the messages go to has no consumer."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from services.analysis import service as analysis
from services.config import get_settings
from services.db import get_engine, get_session_factory, unit_of_work, utcnow
from services.jobs import repository
from services.jobs import service as jobs
from services.jobs.models import Job
from services.patients import service as patients
from tests.conftest import fresh_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(redis_url: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A database of its own: "a sample waits" is a question about every job of the database.
    with fresh_database() as url:
        yield from _configured(url, redis_url, tmp_path, monkeypatch)


def _configured(
    url: str, redis_url: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("CTDNA_DATABASE_URL", url)
    monkeypatch.setenv("CTDNA_BROKER_URL", redis_url)
    monkeypatch.setenv("CTDNA_DATA_DIR", str(tmp_path))
    caches = (get_settings, get_engine, get_session_factory)
    for cached in caches:
        cached.cache_clear()
    yield
    get_engine().dispose()
    for cached in caches:
        cached.cache_clear()


def _status(job_id: str) -> Job:
    with unit_of_work() as session:
        job = repository.get(session, job_id)
        assert job is not None
        return job


def test_a_clone_fit_waits_for_queued_samples_then_runs(database: None) -> None:
    with unit_of_work() as session:
        patient = patients.create_patient(session, "site-defer", "DF-1")
        ingest = jobs.create_job(session, task=jobs.INGEST_TASK, site="site-defer")
        analysis.request_clones(session, patient)
        clones = session.query(Job).filter_by(patient_pk=patient.id).one()
        ingest_id, clones_id = ingest.id, clones.id

    assert analysis.run_clones(clones_id) == "deferred"
    deferred = _status(clones_id)
    assert deferred.status == "queued" and deferred.lease_expires_at is None
    assert deferred.sent_at is not None  # the sweep re-sends it after job_resend_after_seconds
    with unit_of_work() as session:
        # A second request while it waits is the same job (coalesced).
        patient_row = patients.get_patient_or_raise(session, "site-defer", "DF-1")
        analysis.request_clones(session, patient_row)
        assert session.query(Job).filter_by(task=analysis.CLONES_TASK).count() == 1

    # Released only once no sample waits.
    assert analysis.release_deferred_clones() == 0
    with unit_of_work() as session:
        job = repository.get(session, ingest_id)
        assert job is not None
        jobs.finish(session, job)
    assert analysis.release_deferred_clones() == 1
    assert _status(clones_id).sent_at > deferred.sent_at
    assert analysis.run_clones(clones_id) == "succeeded"
    assert _status(clones_id).status == "succeeded"


def test_a_clone_fit_that_waited_long_enough_runs_despite_queued_samples(
    database: None,
) -> None:
    with unit_of_work() as session:
        patient = patients.create_patient(session, "site-defer", "DF-2")
        jobs.create_job(session, task=jobs.INGEST_TASK, site="site-defer")
        analysis.request_clones(session, patient)
        clones = session.query(Job).filter_by(patient_pk=patient.id).one()
        clones_id = clones.id
        old = utcnow() - dt.timedelta(seconds=analysis.CLONES_MAX_DEFER_SECONDS + 1)
        session.execute(update(Job).where(Job.id == clones_id).values(created_at=old))
    assert analysis.run_clones(clones_id) == "succeeded"
