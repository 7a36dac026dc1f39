"""Confirmation of corrupted verdicts by a second read (schema version 10):
``statuses.confirm_due`` (when the second read of an unconfirmed corrupted verdict is due,
indexed: workers claim from it) and ``statuses.confirm_from`` (the worker of the first
read), ``events.reader`` (the worker of a read that takes part in a confirmation).

The corrupted verdicts already in the database were each made by one read: they become
unconfirmed, due for their second read at once, so that none is declared to Rucio before a
second read agreed with it.

Revision ID: 0010
Revises: 0009
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CORRUPTED = 2
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))
statuses = sa.table("statuses", sa.column("status"), sa.column("confirm_due"),
                    sa.column("claim_key"), sa.column("tag"))


def upgrade() -> None:
    # Nullable columns without a default: instant on MariaDB 10.3+ and PostgreSQL, however
    # large the tables.
    op.add_column("statuses", sa.Column("confirm_due", sa.Double))
    op.add_column("statuses", sa.Column("confirm_from", sa.String(96)))
    op.create_index("ix_statuses_confirm_due", "statuses", ["confirm_due"])
    op.add_column("events", sa.Column("reader", sa.String(96)))
    # Due at once, out of the regular queue until then (a leased row keeps its lease).
    op.execute(statuses.update().where(statuses.c.status == CORRUPTED)
               .values(confirm_due=0.0))
    op.execute(statuses.update().where(statuses.c.status == CORRUPTED,
                                       statuses.c.tag.is_(None))
               .values(claim_key=None))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="10"))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("reader")
    op.drop_index("ix_statuses_confirm_due", "statuses")
    with op.batch_alter_table("statuses") as batch:
        batch.drop_column("confirm_from")
        batch.drop_column("confirm_due")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="9"))
