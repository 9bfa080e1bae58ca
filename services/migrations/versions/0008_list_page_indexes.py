"""list page indexes: keys and webhook endpoints by (site, created_at, id)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 22:55:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # GET /v1/keys and GET /v1/webhook-endpoints page by (created_at, id) within a site: with
    # only the site index, each page sorted every key of the site (a sequential scan of
    # api_keys once a site has many). Their sort key now leads an index.
    op.create_index(
        "ix_api_keys_site_created_at", "api_keys", ["site", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_webhook_endpoints_site_created_at",
        "webhook_endpoints",
        ["site", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_endpoints_site_created_at", table_name="webhook_endpoints")
    op.drop_index("ix_api_keys_site_created_at", table_name="api_keys")
