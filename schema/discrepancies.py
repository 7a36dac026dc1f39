"""The catalog's discrepancies as others read them: the kinds a compare finds, and the
lists a site publishes (``SITE_missing.txt``, ...). Written by ``catalog.compare``; read by
the report (web/), which therefore needs nothing from the catalog room."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from pnfsmon.schema.atomic import atomic_text
from pnfsmon.schema.paths import encode_line
from pnfsmon.schema.tables import compares, discrepancies

#: missing: the catalog has it, the crawl did not list it; orphan: the other way round
#: (dark data); mismatch: both have it, with another size or checksum.
KINDS = ("missing", "orphan", "mismatch")
BATCH = 5000


def write_lists(engine: sa.Engine, compare_id: int, site: str, outdir: Path
                ) -> list[Path]:
    """``SITE_missing.txt``, ``SITE_orphan.txt``, ``SITE_mismatch.txt`` of a compare: one
    percent-encoded LFN per line, confirmed entries only. Lists the compare did not
    publish (refused, flagged) are removed rather than left stale."""

    outdir.mkdir(parents=True, exist_ok=True)
    d = discrepancies.c
    with engine.connect() as conn:
        state = conn.execute(sa.select(compares.c.state)
                             .where(compares.c.id == compare_id)).scalar_one()
        written = []
        for kind in KINDS:
            path = outdir / f"{site}_{kind}.txt"
            publish = state == "published" or (state == "refused" and kind == "mismatch")
            if not publish:
                path.unlink(missing_ok=True)
                continue
            with atomic_text(path) as fh:
                for lfn, storage in conn.execution_options(
                        stream_results=True, yield_per=BATCH).execute(
                    sa.select(d.lfn, d.path)
                    .where(d.compare_id == compare_id, d.kind == kind,
                           d.confirmed == sa.true())
                    .order_by(d.lfn)
                ):
                    fh.write(encode_line(bytes(lfn if lfn is not None else storage)) + "\n")
            written.append(path)
    return written
