"""Alembic migrations: the only way the schema is created, on PostgreSQL and on SQLite; and
the privileges of the application's own database role.

Two roles in a deployment (README, Operations): the migration owner owns every table and runs
`ctdna migrate`; the application role (CTDNA_DATABASE_APP_ROLE) that the API, workers and beat
connect as may read and write rows but owns nothing, so it can alter no table and no trigger:
the audit trail is append-only to it by privilege (INSERT and SELECT only), and by the
trigger of migration 0004 for everyone else."""

from __future__ import annotations

import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

HERE = Path(__file__).resolve().parent
_ROLE = re.compile(r"[a-z_][a-z0-9_$]{0,62}")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # ConfigParser interpolation would choke on a % in a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def grant_app_role(url: str, role: str) -> None:
    """Give the application role what the service needs on a migrated PostgreSQL database,
    and nothing more: rows of every table, the audit trail only appended to and read. Run by
    the owner after every migration (new tables need their grants); idempotent."""
    from services.db import make_engine

    if not _ROLE.fullmatch(role):
        raise ValueError(f"not a plain role name: {role!r}")
    engine = make_engine(url, pooled=False)
    try:
        with engine.begin() as conn:
            if conn.dialect.name != "postgresql":
                return
            owner = conn.scalar(text("SELECT current_user"))
            if owner == role:
                raise ValueError(
                    f"the application role {role!r} is the role migrating: it would own the "
                    "tables (and could drop the audit trail's trigger); connect as the owner"
                )
            for statement in (
                f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
                f"GRANT USAGE ON SCHEMA public TO {role}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
                f"REVOKE UPDATE, DELETE ON audit_log FROM {role}",
                f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {role}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
            ):
                conn.execute(text(statement))
    finally:
        engine.dispose()
