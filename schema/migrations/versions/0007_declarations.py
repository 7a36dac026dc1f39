"""Declarations to Rucio (schema version 7): the ``declarations`` table, one row per file
declared bad (``pnfsmon declare --apply``) with Rucio's answer. Starts empty.

Revision ID: 0007
Revises: 0006
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")
HashBytes = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))


def upgrade() -> None:
    op.create_table(
        "declarations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("file_id", sa.BigInteger, nullable=False),
        sa.Column("path_hash", HashBytes, nullable=False),
        sa.Column("path", sa.LargeBinary, nullable=False),
        sa.Column("rse", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("name", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("computed_adler32", sa.String(8)),
        sa.Column("recorded_adler32", sa.String(8)),
        sa.Column("checked", sa.Double),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("declared", sa.Double, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("answer", sa.String(1024)),
        sa.PrimaryKeyConstraint("id", name="pk_declarations"),
    )
    op.create_index("ix_declarations_site_path_hash", "declarations", ["site", "path_hash"])
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="7"))


def downgrade() -> None:
    op.drop_index("ix_declarations_site_path_hash", "declarations")
    op.drop_table("declarations")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="6"))
