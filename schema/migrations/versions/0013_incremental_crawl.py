"""Incremental crawls (schema version 13): ``crawl_directories`` (each directory's mtime as
the last complete crawl saw it; starts empty, so each site's next crawl is a full one),
``statuses.dir_hash`` (the hash of the file's directory, by which an incremental crawl
carries the files of an unchanged directory over), ``crawls.kind`` and
``crawls.skipped_directories``.

Every existing row's ``dir_hash`` is filled here, page by page: the paths are read, hashed
in Python (BLAKE2b, as ``schema.paths.path_hash``) into a scratch table, and copied over by
one joined UPDATE per page. On a site with millions of files this takes minutes, once.

Revision ID: 0013
Revises: 0012
Created: 2026-11-29"""

from __future__ import annotations

import hashlib
import os

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

HashBytes = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")
meta = sa.table("pnfsmon_meta", sa.column("key"), sa.column("value"))
PAGE = 20000
FILL = "dir_hash_fill_0008"


def _dir_hash(path: bytes) -> bytes:
    return hashlib.blake2b(os.path.dirname(path), digest_size=16).digest()


def upgrade() -> None:
    op.create_table(
        "crawl_directories",
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("path_hash", HashBytes, nullable=False),
        sa.Column("path", sa.LargeBinary, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("unsettled", sa.Boolean, nullable=False),
        sa.Column("crawl_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("site", "path_hash", name="pk_crawl_directories"),
    )
    op.add_column("crawls", sa.Column("kind", sa.String(16)))
    op.add_column("crawls", sa.Column("skipped_directories", sa.BigInteger, nullable=False,
                                      server_default="0"))
    op.add_column("statuses", sa.Column("dir_hash", HashBytes))
    _fill_dir_hashes()
    op.create_index("ix_statuses_site_dir_hash", "statuses", ["site", "dir_hash"])
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="13"))


def _fill_dir_hashes() -> None:
    conn = op.get_bind()
    statuses = sa.table("statuses", sa.column("id"), sa.column("path"),
                        sa.column("dir_hash"))
    fill = sa.Table(FILL, sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True,
                                                   autoincrement=False),
                    sa.Column("dir_hash", HashBytes, nullable=False))
    fill.drop(conn, checkfirst=True)
    fill.create(conn)
    last = -1
    while True:
        page = conn.execute(sa.select(statuses.c.id, statuses.c.path)
                            .where(statuses.c.id > last).order_by(statuses.c.id)
                            .limit(PAGE)).all()
        if not page:
            break
        last = page[-1][0]
        conn.execute(fill.insert(), [{"id": i, "dir_hash": _dir_hash(bytes(p))}
                                     for i, p in page])
        conn.execute(statuses.update().where(statuses.c.id == fill.c.id)
                     .values(dir_hash=fill.c.dir_hash))
        conn.execute(fill.delete())
    fill.drop(conn)


def downgrade() -> None:
    op.drop_index("ix_statuses_site_dir_hash", "statuses")
    with op.batch_alter_table("statuses") as batch:
        batch.drop_column("dir_hash")
    with op.batch_alter_table("crawls") as batch:
        batch.drop_column("skipped_directories")
        batch.drop_column("kind")
    op.drop_table("crawl_directories")
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="12"))
