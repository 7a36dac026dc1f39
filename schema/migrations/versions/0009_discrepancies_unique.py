"""One row per file, kind and compare in ``discrepancies`` (schema version 9): the
index on (compare_id, kind, path_hash) becomes a unique key, so a batch of a compare
retried after its commit went through (the answer lost on the way) cannot be stored twice.

Duplicate rows such a retry may have left are deleted first, keeping the first of each
(they are copies: one insert, retried). The unique key is created before the old index is
dropped: MariaDB keeps an index on ``compare_id`` for the foreign key at every step.

Revision ID: 0009
Revises: 0008
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = ["compare_id", "kind", "path_hash"]
UNIQUE = "uq_discrepancies_compare_id_kind_path_hash"
INDEX = "ix_discrepancies_compare_id_kind_path_hash"
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))


def upgrade() -> None:
    d = sa.table("discrepancies", sa.column("id"), *(sa.column(c) for c in COLUMNS))
    rows, twice = d.alias("rows"), d.alias("twice")
    first = (sa.select(*(twice.c[c] for c in COLUMNS), sa.func.min(twice.c.id).label("id"))
             .group_by(*(twice.c[c] for c in COLUMNS))
             .having(sa.func.count() > 1).subquery("first"))
    copies = (sa.select(rows.c.id)
              .join(first, sa.and_(rows.c.id > first.c.id,
                                   *(rows.c[c] == first.c[c] for c in COLUMNS)))
              .subquery("copies"))  # a derived table: MySQL cannot read what it deletes
    op.execute(d.delete().where(d.c.id.in_(sa.select(copies.c.id))))
    with op.batch_alter_table("discrepancies") as batch:
        batch.create_unique_constraint(UNIQUE, COLUMNS)
        batch.drop_index(INDEX)
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="9"))


def downgrade() -> None:
    with op.batch_alter_table("discrepancies") as batch:
        batch.create_index(INDEX, COLUMNS)
        batch.drop_constraint(UNIQUE, type_="unique")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="8"))
