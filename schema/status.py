"""The closed vocabulary of verdicts. Status names are stored as small integer codes in the
database and shown by name everywhere else (CLI, reports, exports); this module is the only
place that maps one to the other."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    UNCHECKED = 0  # listed by the crawler, not verified yet (or changed since the last check)
    OK = 1  # content matches the reference checksum
    CORRUPTED = 2  # content or size differs from the reference
    MISSING = 3  # listed in the namespace, but the data cannot be found
    TIMEOUT = 4  # reading took longer than the timeout; bytes_read says how far it got
    UNREADABLE = 5  # I/O or permission error while reading; see the error column
    CHANGED = 6  # rewritten since it was listed: not judged, the next crawl re-queues it
    VANISHED = 7  # no longer in the namespace at the last crawl (deleted on purpose, usually)
    NEARLINE = 8  # dCache says it is only on tape: listed, not read (crawl --include-nearline)
    # Vanished while missing or corrupted: the data is lost, not deleted on purpose as far
    # as anyone told us. It stays (never pruned) until a person acknowledges it (``pnfsmon
    # ack``, then ``vanished``) or it comes back.
    LOST = 9
    # Two full reads of the file disagreed (different Adler32, or one ok and one
    # corrupted), or the namespace found a file the read had found gone: the hardware or
    # the network between, not the data at rest. Shown to a person, never declared.
    UNSTABLE_READ = 10

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Status:
        try:
            return cls[label.upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown status {label!r}; known: {names}") from None


#: Statuses that mean the storage lost or damaged data: what the reports list first.
PROBLEMS: tuple[Status, ...] = (
    Status.MISSING,
    Status.CORRUPTED,
    Status.TIMEOUT,
    Status.UNREADABLE,
    Status.LOST,
    Status.UNSTABLE_READ,
)

#: Statuses of files no longer in the namespace (the crawl did not list them).
GONE: tuple[Status, ...] = (Status.VANISHED, Status.LOST)

#: What a file's status becomes when it vanishes: the lost ones are kept in view.
LOST_WHEN_GONE: tuple[Status, ...] = (Status.MISSING, Status.CORRUPTED)

#: What a site does next about a file of each problem status, and about files the catalog
#: says the site lost (``MISSING_AT_SITE``): one short paragraph each, shown on the report's
#: pages and by ``pnfsmon history``. `Backquoted` text is a command or a file name.
MISSING_AT_SITE = "missing at site"
NEXT_STEPS: dict[Status | str, str] = {
    Status.CORRUPTED: (
        "The bytes no longer match the reference checksum (the storage's, or the one "
        "computed at the first check). pnfs-monitor reads a corrupted file a second time "
        "(a fresh open, `confirm_after` minutes later, by another worker where there is "
        "one) before the verdict is final: until then it is listed as unconfirmed and "
        "never declared (`pnfsmon check --paths corrupted.txt` re-reads it now); two "
        "reads that disagree make it an unstable read. Once it is confirmed, restore it "
        "from another replica, or declare the replica bad so the experiment's data "
        "management replaces it: `pnfsmon declare --site SITE` lists what it would "
        "declare, `pnfsmon declare --site SITE --apply` declares it to Rucio (without the "
        "Rucio client it writes the `rucio-admin replicas declare-bad` input instead). "
        "Several on one pool point at its disks: see the calibration page."),
    Status.MISSING: (
        "The namespace lists the file but its data was not found (a second stat through "
        "the namespace, right after the read, did not find it either). Most often its pool is "
        "down or disabled: check the pool in the row, and once it is back re-check "
        "(`pnfsmon check --paths missing.txt`). If the data is gone, declare the replica "
        "lost so it is transferred again: `pnfsmon declare --site SITE` (a dry run), then "
        "`pnfsmon declare --site SITE --apply`; then remove the namespace entry."),
    Status.TIMEOUT: (
        "An unstable read, not a verdict on the data: the file was not read within the "
        "timeout (a busy or failing pool, or a file staged from tape). Check the pool's "
        "load and health (the calibration page counts timed-out reads per pool), then "
        "re-check with a longer timeout: `pnfsmon check --paths timeout.txt --timeout "
        "1800`. A file that times out again and again on one pool points at a disk."),
    Status.UNREADABLE: (
        "An unstable read, not a verdict on the data: an I/O or permission error stopped "
        "it (the detail column has the error). A permission error means the checking "
        "account cannot read the file: fix the account, not the file. An I/O error points "
        "at the pool's disk or server: check its logs, then re-check (`pnfsmon check "
        "--paths unreadable.txt`); a file its pool cannot return is a lost file, as for "
        "missing."),
    Status.LOST: (
        "Gone from the namespace while it was missing or corrupted: as far as pnfs-monitor "
        "knows, its data is lost, not deleted on purpose. Find out whether it was deleted "
        "on purpose (the experiment's data management, a cleaning campaign); if not, "
        "declare the replica lost so it is transferred again: `pnfsmon declare --site SITE "
        "--apply` (without `--apply`: what it would declare). Then acknowledge it "
        "(`pnfsmon ack PATH`, or `pnfsmon ack --all --site SITE`), "
        "which records who and when and takes it off the lost list."),
    Status.UNSTABLE_READ: (
        "Two reads of the file disagreed: a first read found it corrupted and a second, "
        "independent read (a fresh open, `confirm_after` minutes later, by another worker "
        "where there is one) found another checksum or none wrong; or a read found it gone "
        "and a second stat through the namespace found it. Data at rest does not change "
        "like that: this points at the hardware or the network between (a failing disk, "
        "controller or memory on the pool, a flaky door or worker node, a network "
        "corrupting what it carries). The detail column has both reads, the history both "
        "workers and nodes. A person looks at the pool and the nodes (the calibration "
        "page); it is never declared to Rucio. Re-check once the cause is fixed: "
        "`pnfsmon check --paths unstable_read.txt`."),
    MISSING_AT_SITE: (
        "Lost files: the catalog says the site holds them, and two crawls in a row did "
        "not find them. Look for them first (a pool offline, a path outside the crawl's "
        "root); then declare them lost so they are transferred again: `rucio-admin "
        "replicas declare-bad --reason \"pnfs-monitor: missing at site\" --scope SCOPE "
        "--rse RSE --lfns SITE_missing.txt` (the list holds LFNs, one a line)."),
}
