"""A patient's tracked set under concurrent and repeated changes (issue 18, items 6 and 15):
concurrent PUTs replace the set one after the other (the last one wins, nothing merges), and a
burst of changes queues one re-extraction per sample, not one per change. In-process against a
fresh PostgreSQL database; the Redis database the messages go to has no consumer."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from schemas.variants import TrackedVariantIn
from services.config import get_settings
from services.db import get_engine, get_session_factory, unit_of_work, utcnow
from services.jobs import service as jobs
from services.jobs.models import Job
from services.patients import service as patients
from services.samples.models import Sample
from services.variants import service as tracked
from services.variants.models import TrackedVariant
from tests.conftest import fresh_database

pytestmark = pytest.mark.postgres

SITE = "site-tracked"


@pytest.fixture
def database(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with fresh_database() as url:
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


def patient_with_samples(patient_id: str, plasma: int) -> None:
    with unit_of_work() as session:
        patient = patients.create_patient(session, SITE, patient_id)
        for i in range(plasma):
            session.add(
                Sample(
                    site=SITE,
                    sample_id=f"{patient_id}-S{i}",
                    patient_pk=patient.id,
                    collection_date=dt.date(2025, 1, 1 + i),
                    sample_type="plasma",
                    file_name=f"s{i}.vcf",
                    file_sha256=f"{i:064d}",
                    file_size=1,
                    status="processed",
                    created_at=utcnow(),
                )
            )


def loci(first: int) -> list[TrackedVariantIn]:
    return [TrackedVariantIn(locus_key=f"chr1:{1_000_000 + first + i}:A>G") for i in range(3)]


def put(patient_id: str, items: list[TrackedVariantIn]) -> int:
    with unit_of_work() as session:
        patient = patients.get_patient_or_raise(session, SITE, patient_id)
        return tracked.set_tracked(session, patient, items)


def tracked_keys(patient_id: str) -> set[str]:
    with unit_of_work() as session:
        patient = patients.get_patient_or_raise(session, SITE, patient_id)
        return {t.locus_key for t in tracked.list_tracked(session, patient)}


def replace_together(patient_id: str, sets: list[list[TrackedVariantIn]]) -> None:
    """Every set PUT at the same moment, one thread each."""
    start = threading.Barrier(len(sets))
    errors: list[BaseException] = []

    def replace(items: list[TrackedVariantIn]) -> None:
        start.wait()
        try:
            put(patient_id, items)
        except BaseException as exc:  # noqa: BLE001  reported below
            errors.append(exc)

    threads = [threading.Thread(target=replace, args=(items,)) for items in sets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


def test_concurrent_puts_replace_the_set_one_after_the_other(database: None) -> None:
    patient_with_samples("TR-1", plasma=1)
    sets = [loci(100 * k) for k in range(6)]
    for _ in range(3):
        replace_together("TR-1", sets)
        keys = tracked_keys("TR-1")
        assert keys in [{i.locus_key for i in items} for items in sets], sorted(keys)


def test_a_burst_of_tracked_set_changes_queues_one_reextraction_per_sample(
    database: None,
) -> None:
    patient_with_samples("TR-2", plasma=4)
    for k in range(40):
        put("TR-2", loci(10 * k))
    with unit_of_work() as session:
        queued = session.scalar(
            select(func.count()).select_from(Job).where(Job.task == jobs.INGEST_TASK)
        )
        rows = session.scalar(select(func.count()).select_from(TrackedVariant))
    assert queued == 4
    assert rows == 3
