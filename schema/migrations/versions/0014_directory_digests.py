"""Directory digests (schema version 14): ``crawl_directories.digest``, the digest of each
directory's listing as ``statuses`` holds it (``crawler.digests``). It starts empty, so
each site's next full crawl compares every file once, and records the digests the crawl
after it trusts.

Revision ID: 0014
Revises: 0013
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

HashBytes = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))


def upgrade() -> None:
    op.add_column("crawl_directories", sa.Column("digest", HashBytes))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="14"))


def downgrade() -> None:
    with op.batch_alter_table("crawl_directories") as batch:
        batch.drop_column("digest")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="13"))
