"""Alembic's environment for pnfs-monitor's schema history (``schema/migrations/versions``).

Run through ``schema.migrate`` (``pnfsmon db init`` / ``pnfsmon db upgrade``), which hands
over an open connection; there is no alembic.ini and no URL here, so no password either."""

from __future__ import annotations

from alembic import context

from pnfsmon.schema.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
