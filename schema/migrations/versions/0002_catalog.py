"""The catalog (schema version 2): inventory loads and entries, compares and their
discrepancies. New tables only.

Revision ID: 0002
Revises: 0001
Created: 2026-11-22"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PathBytes = sa.LargeBinary()
HashBytes = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")
BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))


def upgrade() -> None:
    op.create_table(
        "inventory_loads",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("started", sa.Double, nullable=False),
        sa.Column("finished", sa.Double),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("entries", sa.BigInteger, nullable=False),
        sa.Column("unmapped", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inventory_loads"),
    )
    op.create_index("ix_inventory_loads_site_complete", "inventory_loads",
                    ["site", "complete"])
    op.create_table(
        "inventory",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("load_id", sa.Integer, nullable=False),
        sa.Column("lfn", PathBytes, nullable=False),
        sa.Column("path", PathBytes, nullable=False),
        sa.Column("path_hash", HashBytes, nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("adler32", sa.String(8)),
        sa.Column("created", sa.Double),
        sa.PrimaryKeyConstraint("id", name="pk_inventory"),
        sa.UniqueConstraint("load_id", "path_hash", name="uq_inventory_load_id_path_hash"),
        sa.ForeignKeyConstraint(["load_id"], ["inventory_loads.id"], ondelete="CASCADE",
                                name="fk_inventory_load_id_inventory_loads"),
    )
    op.create_table(
        "compares",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("started", sa.Double, nullable=False),
        sa.Column("finished", sa.Double),
        sa.Column("load_id", sa.Integer),
        sa.Column("crawl_id", sa.Integer),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1024)),
        *(sa.Column(name, sa.BigInteger, nullable=False)
          for name in ("missing", "missing_bytes", "orphan", "orphan_bytes", "mismatch",
                       "young", "ignored")),
        sa.PrimaryKeyConstraint("id", name="pk_compares"),
    )
    op.create_index("ix_compares_site_id", "compares", ["site", "id"])
    op.create_table(
        "discrepancies",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("compare_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("path_hash", HashBytes, nullable=False),
        sa.Column("lfn", PathBytes),
        sa.Column("path", PathBytes, nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("detail", sa.String(255)),
        sa.Column("confirmed", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_discrepancies"),
        sa.ForeignKeyConstraint(["compare_id"], ["compares.id"], ondelete="CASCADE",
                                name="fk_discrepancies_compare_id_compares"),
    )
    op.create_index("ix_discrepancies_compare_id_kind_path_hash", "discrepancies",
                    ["compare_id", "kind", "path_hash"])
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="2"))


def downgrade() -> None:
    for table in ("discrepancies", "compares", "inventory", "inventory_loads"):
        op.drop_table(table)
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="1"))
