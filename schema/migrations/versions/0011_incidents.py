"""Incidents (schema version 11): ``incidents``, a burst of problem verdicts from one pool,
one worker node or one hour of a site, held from Rucio until a person decides; and
``incident_files``, the problem checks each holds. Both start empty.

Revision ID: 0011
Revises: 0010
Created: 2026-11-29"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("window_start", sa.Double, nullable=False),
        sa.Column("window_end", sa.Double, nullable=False),
        sa.Column("opened", sa.Double, nullable=False),
        sa.Column("problems", sa.BigInteger, nullable=False),
        sa.Column("checks", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decided_at", sa.Double),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_state_site", "incidents", ["state", "site"])
    op.create_table(
        "incident_files",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.BigInteger, nullable=False),
        sa.Column("file_id", sa.BigInteger, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("checked", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incident_files"),
        sa.UniqueConstraint("event_id", name="uq_incident_files_event_id"),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE",
                                name="fk_incident_files_incident_id_incidents"),
    )
    op.create_index("ix_incident_files_incident_id", "incident_files", ["incident_id"])
    op.create_index("ix_incident_files_file_id", "incident_files", ["file_id"])
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="11"))


def downgrade() -> None:
    op.drop_table("incident_files")
    op.drop_table("incidents")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="10"))
