"""The evidence a crawl keeps (schema version 4): ``statuses.prior_status`` (the status a
file had when it vanished, given back if it returns unchanged), ``crawls.withheld`` (files
a crawl refused to mark vanished: too many at once, or an empty root) and the
``acknowledgements`` of lost files (``pnfsmon ack``: who and when).

Plain ADD COLUMNs (nullable, or with a constant default) and a new table: no rewrite of
``statuses``. Files that vanished before this revision have no prior status: if they come
back unchanged they keep their reference and are checked again.

Revision ID: 0004
Revises: 0003
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")
HashBytes = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))


def upgrade() -> None:
    op.add_column("statuses", sa.Column("prior_status", sa.SmallInteger))
    op.add_column("crawls", sa.Column("withheld", sa.BigInteger, nullable=False,
                                      server_default="0"))
    op.create_table(
        "acknowledgements",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("path", sa.LargeBinary(), nullable=False),
        sa.Column("path_hash", HashBytes, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("acked_by", sa.String(64), nullable=False),
        sa.Column("acked_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_acknowledgements"),
    )
    op.create_index("ix_acknowledgements_site_path_hash", "acknowledgements",
                    ["site", "path_hash"])
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="4"))


def downgrade() -> None:
    op.drop_index("ix_acknowledgements_site_path_hash", table_name="acknowledgements")
    op.drop_table("acknowledgements")
    with op.batch_alter_table("crawls") as batch:
        batch.drop_column("withheld")
    with op.batch_alter_table("statuses") as batch:
        batch.drop_column("prior_status")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="3"))
