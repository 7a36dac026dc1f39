"""Dark data (schema version 12): ``discrepancies.since``, when a file began to be found by
the site's published compares without a break (``pnfsmon declare --dark`` quarantines an
orphan only ``dark_after`` days after that), and the ``quarantines`` table, one row per dark
file sent to Rucio's quarantine with Rucio's answer. Existing discrepancies get no
``since``: their clock starts at the next compare.

Revision ID: 0012
Revises: 0011
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")
HashBytes = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))


def upgrade() -> None:
    op.add_column("discrepancies", sa.Column("since", sa.Double))
    op.create_table(
        "quarantines",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("path_hash", HashBytes, nullable=False),
        sa.Column("path", sa.LargeBinary, nullable=False),
        sa.Column("rse", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("name", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("since", sa.Double, nullable=False),
        sa.Column("compare_id", sa.Integer, nullable=False),
        sa.Column("quarantined", sa.Double, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("answer", sa.String(1024)),
        sa.PrimaryKeyConstraint("id", name="pk_quarantines"),
        sa.UniqueConstraint("site", "path_hash", name="uq_quarantines_site_path_hash"),
    )
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="12"))


def downgrade() -> None:
    op.drop_table("quarantines")
    with op.batch_alter_table("discrepancies") as batch:
        batch.drop_column("since")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="11"))
