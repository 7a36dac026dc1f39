"""The spine (schema version 1): crawls, statuses (the work queue), events, pnfsmon_meta.

Revision ID: 0001
Revises:
Created: 2026-11-20"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Types as they were at this revision (a revision never imports today's tables).
PathBytes = sa.LargeBinary()
HashBytes = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")
BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "pnfsmon_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_pnfsmon_meta"),
    )
    op.create_table(
        "crawls",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("root", PathBytes, nullable=False),
        sa.Column("started", sa.Double, nullable=False),
        sa.Column("finished", sa.Double),
        sa.Column("complete", sa.Boolean, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False)
          for name in ("files", "directories", "empty_directories", "unreadable_directories",
                       "bytes", "new", "changed", "vanished", "skipped")),
        sa.PrimaryKeyConstraint("id", name="pk_crawls"),
    )
    op.create_table(
        "statuses",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("path", PathBytes, nullable=False),
        sa.Column("path_hash", HashBytes, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("recorded_adler32", sa.String(8)),
        sa.Column("recorded_from", sa.String(16)),
        sa.Column("computed_adler32", sa.String(8)),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("checked", sa.Double),
        sa.Column("claim_key", sa.Double),
        sa.Column("tag", sa.String(96)),
        sa.Column("tag_expiry", sa.Double),
        sa.Column("worker_node", sa.String(255)),
        sa.Column("source_node", sa.String(255)),
        sa.Column("bytes_read", sa.BigInteger),
        sa.Column("error", sa.String(1024)),
        sa.Column("pool", sa.String(255)),
        sa.Column("crawl_gen", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_statuses"),
        sa.UniqueConstraint("site", "path_hash", name="uq_statuses_site_path_hash"),
    )
    op.create_index("ix_statuses_claim_key", "statuses", ["claim_key"])
    op.create_index("ix_statuses_lease", "statuses", ["tag_expiry"])
    op.create_index("ix_statuses_site_crawl_gen", "statuses", ["site", "crawl_gen"])
    op.create_index("ix_statuses_status_site", "statuses", ["status", "site"])
    op.create_table(
        "events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("file_id", sa.BigInteger, nullable=False),
        sa.Column("checked", sa.Double, nullable=False),
        sa.Column("worker_node", sa.String(255), nullable=False),
        sa.Column("seconds", sa.Double, nullable=False),
        sa.Column("source_node", sa.String(255)),
        sa.Column("source_pool", sa.String(255)),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("bytes_read", sa.BigInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("computed_adler32", sa.String(8)),
        sa.Column("error", sa.String(1024)),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(["file_id"], ["statuses.id"], ondelete="CASCADE",
                                name="fk_events_file_id_statuses"),
    )
    op.create_index("ix_events_checked", "events", ["checked"])
    op.create_index("ix_events_file_id_checked", "events", ["file_id", "checked"])
    # What pnfs-monitor versions before the Alembic history read (and refuse if newer).
    meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    for table in ("events", "statuses", "crawls", "pnfsmon_meta"):
        op.drop_table(table)
