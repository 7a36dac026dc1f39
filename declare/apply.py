"""Declaring a plan's files bad in Rucio, through Rucio's own client (``rucio-clients``, the
extra ``pnfs-monitor[rucio]``), which reads its own ``rucio.cfg`` (``RUCIO_CONFIG``) and
authenticates itself; and recording each file with Rucio's answer.

Files go as ``{scope, name, rse}`` dicts (PFNs of several RSEs in one call lose some), in
batches that share one reason. A row is recorded only after Rucio answered: if the answer
is lost, the next run sends the file again, Rucio answers "Already declared", and that is
the one row recorded."""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable

import sqlalchemy as sa

from pnfsmon.schema import db
from pnfsmon.schema.declarable import Candidate
from pnfsmon.schema.errors import EXIT_TRANSIENT, ConfigError, PnfsmonError
from pnfsmon.schema.sites import Site
from pnfsmon.schema.tables import declarations, meta

log = logging.getLogger(__name__)

#: Files per call: well under the client's own chunk and quick on Rucio's database.
BATCH = 500

DECLARED = "declared"
ALREADY = "already declared"
UNKNOWN = "unknown replica"
UNCLEAR = "unclear"  # Rucio said something about the batch that names no file of it
#: Rucio's words (``core/replica.py``) for a replica it did not declare, and our outcome.
ANSWERS = {"Already declared": ALREADY, "Unknown replica": UNKNOWN}
#: Outcomes after which the replica is BAD in Rucio.
BAD_IN_RUCIO = (DECLARED, ALREADY)


class RucioUnavailable(PnfsmonError):
    """Rucio could not be reached: nothing more was declared, and nothing recorded that
    Rucio did not answer. A later run declares the rest."""

    exit_code = EXIT_TRANSIENT


def client_installed() -> bool:
    try:
        import rucio.client  # noqa: F401
    except ImportError:
        return False
    return True


def _transient(err: BaseException) -> bool:
    import requests
    from rucio.common import exception

    return isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                            exception.ServerConnectionException,
                            exception.ServiceUnavailable, ConnectionError))


def rucio_failure(err: Exception, verb: str, done: int, total: int,
                  what: str = "files") -> Exception | None:
    """The error a run ends with when a Rucio call failed after ``done`` of ``total``:
    unreachable (transient: exit 3, retried) or a refusal (exit 2); None for anything
    else, which is ours and is raised as it is."""
    from rucio.common.exception import RucioException

    if _transient(err):
        return RucioUnavailable(f"Rucio became unreachable after {done} of {total} {what}: "
                                f"{_first_line(err)}")
    if isinstance(err, RucioException):
        return ConfigError(f"Rucio refused to {verb} (after {done} of {total} {what}): "
                           f"{type(err).__name__}: {_first_line(err)}")
    return None


def connect():
    """A Rucio client, authenticated as its ``rucio.cfg`` says."""
    from rucio.client import Client
    from rucio.common.exception import RucioException

    try:
        return Client()
    except Exception as err:  # noqa: BLE001 (sorted below: transient or a person's job)
        if _transient(err) or _transient(err.__cause__ or err):
            raise RucioUnavailable(f"Rucio is unreachable: {_first_line(err)}") from None
        if isinstance(err, RucioException):
            raise ConfigError(f"Rucio client: {type(err).__name__}: {_first_line(err)} "
                              "(see its rucio.cfg, RUCIO_CONFIG)") from None
        raise


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


_TUPLE = re.compile(r"""^\(.*, (['"])(?P<name>.*)\1\)$""")


def _named(subject: str, scope: str) -> str | None:
    """The file name in Rucio's "scope:name" or "('scope', 'name')" (its two forms)."""
    m = _TUPLE.match(subject)
    if m:
        return m.group("name")
    if subject.startswith(f"{scope}:"):
        return subject[len(scope) + 1:]
    return None


def outcomes(answer: dict, names: Iterable[str], scope: str) -> dict[str, tuple[str, str]]:
    """(outcome, Rucio's words) for each name sent, from Rucio's answer: ``{}`` when all
    were declared, else ``{rse: ["<replica> Already declared", ...]}``."""
    result = {name: (DECLARED, "") for name in names}
    unattributed = []
    for messages in (answer or {}).values():
        for message in messages:
            what = next((w for w in ANSWERS if message.endswith(" " + w)), None)
            name = _named(message[:-len(what) - 1], scope) if what else None
            if name in result:
                result[name] = (ANSWERS[what], message)
            else:
                unattributed.append(message)
    if unattributed:
        # Rucio said something we cannot pin on one file: no file of the batch is shown as
        # declared for sure; a person reads Rucio's words in the record.
        log.warning("Rucio's answer names no file of the batch: %s", "; ".join(unattributed))
        text = "; ".join(unattributed)[:1024]
        for name, (outcome, _) in result.items():
            if outcome == DECLARED:
                result[name] = (UNCLEAR, text)
    return result


def _record(engine: sa.Engine, site: Site, batch: list[Candidate], reason: str,
            answers: dict[str, tuple[str, str]], when: float, after_id: int) -> None:
    """Record the batch, except files that another run declared since this one planned
    (declarations of the site after ``after_id``): Rucio told that run "declared" and this
    one "already declared"; one record is the truth. Records are serialised by a lock, so
    the two runs cannot both miss each other's."""
    rows = [dict(site=site.name, file_id=c.file_id, path_hash=c.path_hash, path=c.path,
                 rse=site.rucio_rse, scope=site.rucio_scope, name=c.lfn,
                 status=int(c.status), computed_adler32=c.computed_adler32,
                 recorded_adler32=c.recorded_adler32, checked=c.checked, reason=reason,
                 declared=when, outcome=answers[os.fsdecode(c.lfn)][0],
                 answer=answers[os.fsdecode(c.lfn)][1] or None) for c in batch]

    def run() -> None:
        with db.write_transaction(engine) as conn:
            conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")
                         .with_for_update())
            hashes = [r["path_hash"] for r in rows]
            taken = {bytes(h) for (h,) in conn.execute(
                sa.select(declarations.c.path_hash).where(
                    declarations.c.site == site.name, declarations.c.id > after_id,
                    declarations.c.path_hash.in_(hashes)))}
            if taken:
                log.info("%d files were declared and recorded by another run meanwhile: "
                         "not recorded again", len(taken))
            fresh = [r for r in rows if r["path_hash"] not in taken]
            if fresh:
                conn.execute(declarations.insert(), fresh)

    db.retrying(engine, run)


def require_rucio_settings(site: Site) -> None:
    missing = [k for k in ("rucio_rse", "rucio_scope") if not getattr(site, k)]
    if missing:
        raise ConfigError(f"[site {site.name}] needs {' and '.join(missing)} to declare "
                          "its files to Rucio")


def apply(engine: sa.Engine, site: Site, candidates: list[Candidate], client,
          after_id: int = 0) -> Counter:
    """Declare ``candidates`` bad on the site's RSE; returns how many got each outcome.
    ``after_id``: the plan's ``last_id``."""

    require_rucio_settings(site)
    tally: Counter = Counter()
    by_reason: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_reason.setdefault(c.reason(site.name), []).append(c)
    for reason, group in by_reason.items():
        for start in range(0, len(group), BATCH):
            batch = group[start:start + BATCH]
            names = [os.fsdecode(c.lfn) for c in batch]
            replicas = [{"scope": site.rucio_scope, "name": n, "rse": site.rucio_rse}
                        for n in names]
            try:
                answer = client.declare_bad_file_replicas(replicas, reason=reason)
            except Exception as err:  # noqa: BLE001 (sorted by rucio_failure)
                failure = rucio_failure(err, "declare", sum(tally.values()), len(candidates))
                if failure is None:
                    raise
                raise failure from None
            answers = outcomes(answer, names, site.rucio_scope)
            _record(engine, site, batch, reason, answers, time.time(), after_id)
            tally.update(outcome for outcome, _ in answers.values())
    return tally
