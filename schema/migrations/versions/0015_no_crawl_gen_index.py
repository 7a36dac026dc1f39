"""No index on (statuses.site, statuses.crawl_gen) (schema version 15). No query used it:
the only one that filters by ``crawl_gen`` (``schema.prune``, vanished files of old
crawls) names no site, so it goes by (status, site). Every row a crawl inserts, and every
file it marks vanished, paid for it: a tenth of MariaDB's work in a first crawl
(bench/crawl.py), and about 50 bytes a file of index.

Revision ID: 0015
Revises: 0014
Created: 2026-11-30"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))


def upgrade() -> None:
    op.drop_index("ix_statuses_site_crawl_gen", table_name="statuses")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="15"))


def downgrade() -> None:
    op.create_index("ix_statuses_site_crawl_gen", "statuses", ["site", "crawl_gen"])
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="14"))
