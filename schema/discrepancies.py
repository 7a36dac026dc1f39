"""The catalog's discrepancies as others read them: the closed vocabularies of a compare
(the kinds of discrepancy it finds, the states it ends in) and the lists a site publishes
(``SITE_missing.txt``, ...). Written by ``catalog.compare``; read by the report (web/),
which therefore needs nothing from the catalog room. Both vocabularies are stored by their
value (``discrepancies.kind``, ``compares.state``), the words operators read in the lists,
the reports and SQL, and shown so everywhere."""

from __future__ import annotations

import enum
from pathlib import Path

import sqlalchemy as sa

from pnfsmon.schema.atomic import atomic_text
from pnfsmon.schema.paths import encode_line
from pnfsmon.schema.tables import compares, discrepancies


class Discrepancy(str, enum.Enum):
    """What a compare found of one file."""

    MISSING = "missing"  # the catalog has it, the crawl did not list it (lost by the site)
    ORPHAN = "orphan"  # on storage, in the mapped area, not in the catalog (dark data)
    MISMATCH = "mismatch"  # both have it, with another size or Adler32

    def __str__(self) -> str:  # the stored word, as StrEnum does (Python 3.11+)
        return self.value


class CompareState(str, enum.Enum):
    """Where a compare stands (``compares.state``)."""

    RUNNING = "running"  # started; one left running a day has died (``catalog.compare``)
    PUBLISHED = "published"  # its confirmed lists are the site's lists
    REFUSED = "refused"  # the crawl looks incomplete: no missing or orphan list
    FLAGGED = "flagged"  # more than the configured fraction: for a person, not published
    FAILED = "failed"  # ended in an error, or its process died

    def __str__(self) -> str:
        return self.value


BATCH = 5000


def published(state: CompareState, kind: Discrepancy) -> bool:
    """Whether a compare in ``state`` publishes its list of ``kind``: a refused compare
    still lists mismatches, which an incomplete crawl does not put in doubt."""
    return state is CompareState.PUBLISHED or (
        state is CompareState.REFUSED and kind is Discrepancy.MISMATCH)


def write_lists(engine: sa.Engine, compare_id: int, site: str, outdir: Path
                ) -> list[Path]:
    """``SITE_missing.txt``, ``SITE_orphan.txt``, ``SITE_mismatch.txt`` of a compare: one
    percent-encoded LFN per line, confirmed entries only. Lists the compare did not
    publish (refused, flagged) are removed rather than left stale."""

    outdir.mkdir(parents=True, exist_ok=True)
    d = discrepancies.c
    with engine.connect() as conn:
        state = CompareState(conn.execute(sa.select(compares.c.state)
                                          .where(compares.c.id == compare_id)).scalar_one())
        written = []
        for kind in Discrepancy:
            path = outdir / f"{site}_{kind}.txt"
            if not published(state, kind):
                path.unlink(missing_ok=True)
                continue
            with atomic_text(path) as fh:
                for lfn, storage in conn.execution_options(
                        stream_results=True, yield_per=BATCH).execute(
                    sa.select(d.lfn, d.path)
                    .where(d.compare_id == compare_id, d.kind == kind.value,
                           d.confirmed == sa.true())
                    .order_by(d.lfn)
                ):
                    fh.write(encode_line(bytes(lfn if lfn is not None else storage)) + "\n")
            written.append(path)
    return written
