"""Write the static report: ``index.html``, one page per problem status, ``summary.json``
and one list file per problem status. Rows are streamed from the database; every file is
written to a temporary name and renamed, so a web server never serves half a report.

List files (``missing.txt``, ``corrupted.txt``, ``timeout.txt``, ``unreadable.txt``) hold
one path per line, percent-encoded: every byte outside printable ASCII, plus ``%`` and
space, becomes ``%XX``. ``urllib.parse.unquote_to_bytes(line)`` gives back the exact bytes."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import jinja2
import sqlalchemy as sa

from schema.paths import display, encode_line
from schema.progress import human_bytes
from schema.status import PROBLEMS, Status
from web.summary import Summary, problem_rows, summarize

#: Rows shown on one HTML page; the list files always hold everything.
PAGE_ROWS = 5000

DESCRIPTIONS = {
    Status.MISSING: "Listed in the namespace, but the data could not be found.",
    Status.CORRUPTED: "The content's Adler32 or size differs from the reference checksum.",
    Status.TIMEOUT: "Could not be read within the timeout; 'bytes read' shows how far it got.",
    Status.UNREADABLE: "An I/O or permission error stopped the read; see the detail column.",
}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


@contextmanager
def _atomic(path: Path, mode: str = "w") -> Iterator[TextIO]:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode, encoding="utf-8", newline="\n") as fh:
            yield fh
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_report(engine: sa.Engine, outdir: Path) -> Summary:
    """Render every page and export into ``outdir`` (created if needed)."""
    outdir.mkdir(parents=True, exist_ok=True)
    env = _environment()
    with engine.connect() as conn:
        summary = summarize(conn)
        common = {
            "generated": _when(summary.generated),
            "problem_labels": [s.label for s in PROBLEMS],
        }
        for status in PROBLEMS:
            _write_problem(conn, env, outdir, status, summary.counts[status], common)
    crawls = [
        {**c.__dict__, "root_display": display(c.root), "finished_text": _when(c.finished),
         "duration": f"{(c.finished or c.started) - c.started:.0f} s",
         "size": human_bytes(c.bytes)}
        for c in summary.crawls
    ]
    with _atomic(outdir / "index.html") as fh:
        fh.write(env.get_template("index.html").render(
            s=summary, counts=[(s.label, summary.counts[s]) for s in Status],
            percent_checked=100.0 * summary.checked / max(summary.listed, 1),
            crawls=crawls, **common,
        ))
    with _atomic(outdir / "summary.json") as fh:
        json.dump(summary.as_json(), fh, indent=2)
        fh.write("\n")
    return summary


def _write_problem(conn: sa.Connection, env: jinja2.Environment, outdir: Path,
                   status: Status, total: int, common: dict) -> None:
    shown = []
    with _atomic(outdir / f"{status.label}.txt") as listing:
        for row in problem_rows(conn, status):
            listing.write(encode_line(row.path) + "\n")
            if len(shown) < PAGE_ROWS:
                shown.append({**row.__dict__, "path_display": display(row.path),
                              "checked_text": _when(row.checked)})
    with _atomic(outdir / f"{status.label}.html") as fh:
        fh.write(env.get_template("problems.html").render(
            label=status.label, description=DESCRIPTIONS[status], rows=shown, total=total,
            **common,
        ))
