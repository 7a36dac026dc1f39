"""Each reference's provenance (schema version 5): ``statuses.reference`` says where a
file's reference checksum came from or why it has none (``schema.reference``), the
``status_counts`` ledger counts files by it instead of by the ``first_check`` flag, and
``crawls.checksums_unread`` counts the recorded checksums a crawl could not read.

Existing rows: a first-check reference becomes ``first read``, a recorded checksum
``storage``; a file without one is ``unknown`` (whether the storage had none or it could
not be read was not kept), so its first check asks the storage again. The ledger is
rebuilt from one grouped scan.

Revision ID: 0005
Revises: 0004
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))
STORAGE, FIRST_READ = 1, 2  # Reference values at this revision


def upgrade() -> None:
    # Plain ADD COLUMNs (constant defaults): no rewrite of statuses on any backend.
    op.add_column("statuses", sa.Column("reference", sa.SmallInteger, nullable=False,
                                        server_default="0"))
    op.add_column("crawls", sa.Column("checksums_unread", sa.BigInteger, nullable=False,
                                      server_default="0"))
    statuses = sa.table("statuses", sa.column("site"), sa.column("status"),
                        sa.column("size"), sa.column("recorded_adler32"),
                        sa.column("recorded_from"), sa.column("reference"))
    op.execute(statuses.update().where(statuses.c.recorded_from == "first_check")
               .values(reference=FIRST_READ))
    op.execute(statuses.update().where(statuses.c.recorded_adler32.is_not(None),
                                       statuses.c.reference == 0)
               .values(reference=STORAGE))
    _rebuild_ledger("reference", lambda s: s.c.reference)
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="5"))


def _rebuild_ledger(column: str, key) -> None:
    """Replace the ledger's key column by ``column`` and refill it from a scan of
    ``statuses`` grouped by ``key(statuses)``."""
    old = "first_check" if column == "reference" else "reference"
    counts = sa.table("status_counts", sa.column("site"), sa.column("status"),
                      sa.column(column), sa.column("files"), sa.column("bytes"))
    statuses = sa.table("statuses", sa.column("site"), sa.column("status"),
                        sa.column("size"), sa.column("recorded_from"), sa.column("reference"))
    key = key(statuses)
    op.execute(sa.text("DELETE FROM status_counts"))
    with op.batch_alter_table("status_counts") as batch:
        batch.drop_column(old)
        batch.add_column(sa.Column(column, sa.SmallInteger if column == "reference"
                                   else sa.Boolean, nullable=False))
    op.execute(counts.insert().from_select(
        ["site", "status", column, "files", "bytes"],
        sa.select(statuses.c.site, statuses.c.status, key, sa.func.count(),
                  sa.func.coalesce(sa.func.sum(statuses.c.size), 0))
        .group_by(statuses.c.site, statuses.c.status, key)))


def downgrade() -> None:
    # A literal, not a bound parameter: PostgreSQL must see the GROUP BY expression as the
    # same one as in the SELECT list.
    _rebuild_ledger("first_check", lambda s: sa.case(
        (s.c.recorded_from == sa.literal_column("'first_check'"), sa.true()),
        else_=sa.false()))
    with op.batch_alter_table("statuses") as batch:
        batch.drop_column("reference")
    with op.batch_alter_table("crawls") as batch:
        batch.drop_column("checksums_unread")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="4"))
