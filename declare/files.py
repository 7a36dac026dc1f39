"""Without the Rucio client: the input files of the tools people already use, written
atomically into one directory.

- ``<RSE>_declare_bad.lfns``: one LFN a line, for ``rucio-admin replicas declare-bad
  --lfns FILE --scope SCOPE --rse RSE --reason ...``, which declares by name on that RSE
  only. (``--inputfile`` with ``scope:name`` lines would declare every replica of the file
  on every RSE, and with 100 lines or more it switches to its queued path.)
  ``<RSE>_declare_bad.tsv`` beside it: each file's verdict, Adler32s and time.
- The CMS consistency scanner's run files ``<RSE>_<YYYY_MM_DD_HH_MM>_{stats.json,M.list,
  D.list}``: missing LFNs in M.list; in D.list the dark data of the latest compare, if it
  was published (every confirmed orphan still on storage: the dark list of one run, from
  which CMS's own tools quarantine what several runs agree on; ``declare.dark``)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from pnfsmon.schema.declarable import Candidate
from pnfsmon.schema.sites import Site
from pnfsmon.schema.status import Status


def _write_atomically(path: Path, data: bytes) -> None:
    """LFNs are bytes (any name a storage holds): written as they are, renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _lines(names: list[bytes]) -> bytes:
    return b"".join(n + b"\n" for n in names)


def write(site: Site, candidates: list[Candidate], outdir: Path,
          now: float | None = None, dark: list[bytes] = (),
          dark_note: str | None = None) -> list[Path]:
    """Write the files for ``candidates`` and the ``dark`` LFNs of ``site`` (its
    ``rucio_rse``); their paths. ``dark_note``: why the dark list is empty, if it is
    not a published compare's (kept in stats.json)."""
    now = time.time() if now is None else now
    rse = site.rucio_rse or site.name
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y_%m_%d_%H_%M", time.gmtime(now))
    missing = [c.lfn for c in candidates if c.status in (Status.MISSING, Status.LOST)]
    table = [b"lfn\tverdict\tcomputed_adler32\trecorded_adler32\tchecked\n"] + [
        b"\t".join([c.lfn, c.status.label.encode(), (c.computed_adler32 or "").encode(),
                    (c.recorded_adler32 or "").encode(),
                    time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                  time.gmtime(c.checked or 0)).encode()]) + b"\n"
        for c in candidates]
    stats = {"rse": rse, "scope": site.rucio_scope, "site": site.name, "tool": "pnfs-monitor",
             "start_time": now, "end_time": now, "missing": len(missing), "dark": len(dark),
             "corrupted_not_listed": sum(c.status == Status.CORRUPTED for c in candidates)}
    if dark_note:
        stats["dark_not_listed"] = dark_note
    files = {
        f"{rse}_declare_bad.lfns": _lines([c.lfn for c in candidates]),
        f"{rse}_declare_bad.tsv": b"".join(table),
        f"{rse}_{stamp}_M.list": _lines(missing),
        f"{rse}_{stamp}_D.list": _lines(sorted(dark)),
        f"{rse}_{stamp}_stats.json": json.dumps(stats, indent=1).encode() + b"\n",
    }
    written = []
    for name, data in files.items():
        path = outdir / name
        _write_atomically(path, data)
        written.append(path)
    return written


def command(site: Site, path: Path) -> str:
    """The rucio-admin command that declares the list at ``path``."""
    scope = site.rucio_scope or "SCOPE"
    return (f"rucio-admin replicas declare-bad --lfns {os.fspath(path)} --scope {scope} "
            f"--rse {site.rucio_rse or 'RSE'} --reason 'pnfs-monitor {site.name}: corrupted "
            f"or missing, see {path.with_suffix('.tsv').name}'")
