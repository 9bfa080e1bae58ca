"""Two database roles (issue 18, item 15): the service connects as an application role that
owns nothing, so it can append to the audit trail and read it but neither change its rows nor
alter the table or switch off its append-only trigger; `ctdna migrate` (run as the owner)
grants it exactly that, and the service's processes in the tests connect as it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import (
    APP_ROLE,
    APP_URLS,
    PG_ADMIN_URL,
    ctdna,
    ensure_app_role,
    service_env,
    start_api,
)

pytestmark = [pytest.mark.postgres]


def plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
def migrated_by_the_cli(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A new database migrated by `ctdna migrate --app-role`; (owner URL, application URL)."""
    name = f"ctdna_roles_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    owner = f"{base}/{name}"
    try:
        ensure_app_role()
        env = service_env(tmp_path, CTDNA_DATABASE_URL=owner)
        ctdna(env, "migrate", "--app-role", APP_ROLE)
        yield owner, f"postgresql://{APP_ROLE}@{base.split('@', 1)[-1]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_application_role_cannot_touch_the_audit_trail(
    migrated_by_the_cli: tuple[str, str],
) -> None:
    _, app = migrated_by_the_cli
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_log (at, method, route) VALUES (now(), 'GET', '/v1/patients')"
        )
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)
        conn.execute("INSERT INTO patients (site, patient_id, created_at) VALUES ('s', 'p', now())")
        conn.execute("UPDATE patients SET patient_id = 'q'")
        conn.execute("DELETE FROM patients")
        for statement in (
            "UPDATE audit_log SET route = 'forged'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
            "DROP TRIGGER audit_log_no_update_delete ON audit_log",
            "DROP TABLE audit_log",
            "CREATE TABLE shadow (id int)",
            "UPDATE alembic_version SET version_num = '0001'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)


def test_migrating_as_the_application_role_is_refused(tmp_path: Path) -> None:
    ensure_app_role()
    name = f"ctdna_roles_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC')
    try:
        base = PG_ADMIN_URL.rsplit("/", 1)[0].split("@", 1)[-1]
        env = service_env(tmp_path, CTDNA_DATABASE_URL=f"postgresql://{APP_ROLE}@{base}/{name}")
        # the role owns nothing and may create nothing: migrating as it fails
        with pytest.raises(subprocess.CalledProcessError) as failed:
            ctdna(env, "migrate", "--app-role", APP_ROLE)
        assert "permission denied" in failed.value.stderr.lower()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_service_processes_connect_as_the_application_role(pg_url: str, tmp_path: Path) -> None:
    assert pg_url in APP_URLS
    env = service_env(tmp_path, CTDNA_DATABASE_URL=pg_url)
    assert env["CTDNA_DATABASE_URL"] == APP_URLS[pg_url]
    api, base = start_api(env, tmp_path, "--no-worker")
    try:
        assert httpx.get(f"{base}/readyz", timeout=10).json()["checks"]["database"] == "ok"
        database = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(plain(pg_url)) as conn:
            users = {
                row[0]
                for row in conn.execute(
                    "SELECT usename FROM pg_stat_activity WHERE datname = %s", (database,)
                )
            }
        assert APP_ROLE in users
    finally:
        api.stop()
