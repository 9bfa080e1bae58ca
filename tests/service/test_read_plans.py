"""Query plans of the read paths on PostgreSQL. With a few thousand rows per table (and fresh
statistics) the planner must answer every query that the hot reads run (key lookup, /trends,
/mrd, the patient page, a sample and its variants, pages of the lists) from an index: a
sequential scan of one of the big tables is a read whose cost grows with the whole database,
not with the patient.

The rows are written and the plans read inside one transaction that is rolled back, so the
session database the other tests share is left as it was. No timing is asserted: speed is
measured by `ctdna bench`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session

from services.analysis import repository as analyses
from services.analysis.service import stored_body
from services.auth.service import authenticate, create_key, list_keys_page
from services.pagination import PageRequest
from services.patients import repository as patients
from services.samples import repository as samples

pytestmark = pytest.mark.postgres

BIG_TABLES = frozenset(
    {"api_keys", "patients", "patient_events", "samples", "variants", "patient_analyses", "jobs"}
)
SITE = "site-plans"
PATIENTS, SAMPLES_PER, VARIANTS_PER = 2000, 5, 5

LOAD = [
    "INSERT INTO api_keys (id, site, scopes, key_hash, prefix, created_at) "
    f"SELECT md5('k' || g), '{SITE}', 'read', md5('h' || g) || md5(g || 'h'), 'ctd_x', now() "
    f"FROM generate_series(1, {PATIENTS}) g",
    "INSERT INTO patients (site, patient_id, created_at) "
    f"SELECT '{SITE}', 'PL-' || g, now() FROM generate_series(1, {PATIENTS}) g",
    "INSERT INTO patient_events (patient_pk, type, event_date, created_at) "
    f"SELECT id, t, date '2024-01-01', now() FROM patients "
    f"CROSS JOIN unnest(ARRAY['surgery', 'clinical_relapse']) t WHERE site = '{SITE}'",
    "INSERT INTO samples (site, sample_id, patient_pk, collection_date, sample_type, file_name, "
    "file_sha256, file_size, status, created_at) "
    f"SELECT '{SITE}', p.patient_id || '-S' || d, p.id, date '2024-01-01' + 30 * d, 'plasma', "
    "'f.vcf', md5(p.patient_id || d) || md5(d || p.patient_id), 1, 'processed', now() "
    f"FROM patients p CROSS JOIN generate_series(1, {SAMPLES_PER}) d WHERE p.site = '{SITE}'",
    "INSERT INTO variants (sample_pk, chrom, pos, ref, alt, build, locus_key, filter, passed, "
    "detected, quantitative, hotspot, in_monitored_gene, tracked) "
    "SELECT s.id, 'chr3', 179234000 + v, 'A', 'G', 'GRCh38', "
    "'chr3:' || (179234000 + v) || '\\:A>G', 'PASS', true, false, true, false, true, false "
    f"FROM samples s CROSS JOIN generate_series(1, {VARIANTS_PER}) v WHERE s.site = '{SITE}'",
    "INSERT INTO patient_analyses (patient_pk, kind, status, body, computed_at) "
    "SELECT p.id, k, NULL, '{}', now() FROM patients p "
    "CROSS JOIN unnest(ARRAY['mrd', 'trends', 'clones', 'resistance']) k "
    f"WHERE p.site = '{SITE}'",
    "INSERT INTO jobs (id, site, task, sample_pk, status, attempts, created_at, finished_at) "
    "SELECT md5(s.sample_id), s.site, 'samples.ingest', s.id, 'succeeded', 1, now(), now() "
    f"FROM samples s WHERE s.site = '{SITE}'",
]


@pytest.fixture
def session(pg_url: str) -> Iterator[Session]:
    engine = create_engine(pg_url)
    try:
        with Session(engine) as session:
            for statement in LOAD:
                session.execute(text(statement))
            session.execute(text("ANALYZE"))
            yield session
            session.rollback()
    finally:
        engine.dispose()


def plans_of(session: Session, reads: Callable[[], object]) -> list[tuple[str, str]]:
    """Run `reads`, then EXPLAIN every SELECT it sent, with its own parameters."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        reads()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert sent, "the reads sent no query"
    cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    plans = []
    for statement, parameters in sent:
        cursor.execute("EXPLAIN " + statement, parameters)
        plans.append((statement, "\n".join(row[0] for row in cursor.fetchall())))
    return plans


def test_read_paths_use_indexes(session: Session) -> None:
    _, secret = create_key(session, site=SITE, scopes=frozenset({"read"}))
    session.flush()
    patient_id, sample_id = "PL-123", "PL-123-S4"

    def reads() -> None:
        assert authenticate(session, secret) is not None
        # /trends and /mrd
        assert analyses.patient_and_body(session, SITE, patient_id, "trends") is not None
        # the patient page and GET /v1/patients/{id}
        patient = patients.get(session, SITE, patient_id)
        assert patient is not None
        for kind in ("mrd", "trends", "clones", "resistance"):
            assert stored_body(session, patient.id, kind) is not None
        assert len(patients.samples(session, patient.id)) == SAMPLES_PER
        patients.events(session, patient.id)
        # GET /v1/samples/{id} and its variants
        found = samples.get_with_patient(session, SITE, sample_id)
        assert found is not None
        assert samples.latest_job(session, found[0].id) is not None
        variants, cursor = samples.variants(session, found[0].id, PageRequest(limit=2))
        assert len(variants) == 2 and cursor is not None
        samples.variants(session, found[0].id, PageRequest(cursor=cursor, limit=2))
        # the lists, a first page and one further on (keyset, no OFFSET)
        for list_page in (
            lambda page: patients.list_with_counts(session, SITE, page),
            lambda page: list_keys_page(session, SITE, page),
        ):
            rows, cursor = list_page(PageRequest(limit=50))
            assert len(rows) == 50 and cursor is not None
            list_page(PageRequest(cursor=cursor, limit=50))

    scans = [
        (table, statement, plan)
        for statement, plan in plans_of(session, reads)
        for table in re.findall(r"Seq Scan on (\w+)", plan)
        if table in BIG_TABLES
    ]
    assert not scans, "\n\n".join(f"Seq Scan on {t}:\n{s}\n{p}" for t, s, p in scans)
