"""audit denied accesses: outcome, key id and site optional

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 22:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

DENIED = sa.text("outcome = 'denied'")


def upgrade() -> None:
    # A refused request is on the trail too (401/403/404 on a route that reads or writes
    # patient data). A request with no key, or one nobody issued, has no key id and no site:
    # its row keeps the client address. Rows written before this migration were all allowed.
    # On PostgreSQL these are ALTERs only (ADD COLUMN with a constant default rewrites no
    # row), so the append-only trigger of 0004 stays and is never fired; SQLite rebuilds the
    # table (it has no trigger).
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("outcome", sa.String(length=8), nullable=False, server_default="allowed")
        )
        batch_op.alter_column("key_id", existing_type=sa.String(length=32), nullable=True)
        batch_op.alter_column("site", existing_type=sa.String(length=64), nullable=True)
    # Denied rows are few among many allowed ones: a partial index finds them without
    # costing anything on the insert of an allowed row.
    op.create_index(
        "ix_audit_log_site_denied",
        "audit_log",
        ["site", "id"],
        unique=False,
        postgresql_where=DENIED,
        sqlite_where=DENIED,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_log_site_denied", table_name="audit_log")
    # Denied rows may lack a key or a site; the audit trail is append-only, so they are not
    # removed and the columns stay nullable.
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("outcome")
