"""Machine-readable exports beside the pages: every problem list as ``STATUS.txt`` (one
percent-encoded path per line), ``STATUS.csv`` and ``STATUS.jsonl``, written in one pass
over the rows; and ``pnfsmon.prom``, a Prometheus text file for node_exporter's textfile
collector.

Paths in every export are percent-encoded (every byte outside printable ASCII, plus ``%``
and space, is ``%XX``): exact bytes, one line each, whatever the name holds. CSV and JSON
Lines add ``path_display``, the escaped form the pages show."""

from __future__ import annotations

import csv
import json
from contextlib import ExitStack
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from pnfsmon.schema.atomic import atomic_text
from pnfsmon.schema.discrepancies import CompareState, Discrepancy
from pnfsmon.schema.paths import display, encode_line
from pnfsmon.schema.reference import Reference
from pnfsmon.schema.status import Status
from pnfsmon.web.history import utc_iso
from pnfsmon.web.summary import ProblemRow, Summary
from pnfsmon.web.watchdog import AGE_BINS

CSV_COLUMNS = ("site", "path", "path_display", "size", "recorded_adler32", "recorded_from",
               "computed_adler32", "bytes_read", "pool", "source_node", "worker_node",
               "checked", "error")


def _record(row: ProblemRow) -> dict:
    return {
        "site": row.site, "path": encode_line(row.path), "path_display": display(row.path),
        "size": row.size, "recorded_adler32": row.recorded_adler32,
        "recorded_from": row.recorded_from, "computed_adler32": row.computed_adler32,
        "bytes_read": row.bytes_read, "pool": row.pool, "source_node": row.source_node,
        "worker_node": row.worker_node, "checked": utc_iso(row.checked), "error": row.error,
    }


class ListExports:
    """The three list files of one status, filled row by row, each replaced atomically
    when complete (a failure leaves the previous report's files in place)."""

    def __init__(self, outdir: Path, status: Status) -> None:
        self._stack = ExitStack()
        base = outdir / status.label
        self.txt = self._stack.enter_context(atomic_text(base.with_suffix(".txt")))
        self.jsonl = self._stack.enter_context(atomic_text(base.with_suffix(".jsonl")))
        self.csv = csv.DictWriter(
            self._stack.enter_context(atomic_text(base.with_suffix(".csv"))), CSV_COLUMNS,
            lineterminator="\n")
        self.csv.writeheader()

    def add(self, row: ProblemRow) -> None:
        record = _record(row)
        self.txt.write(record["path"] + "\n")
        self.csv.writerow({k: "" if v is None else v for k, v in record.items()})
        self.jsonl.write(json.dumps(record) + "\n")

    def __enter__(self) -> ListExports:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)


def write_prometheus(path: Path, summary: Summary) -> None:
    """Gauges by site and status, the sweep's progress and the last crawl per site."""
    registry = CollectorRegistry()
    files = Gauge("pnfsmon_files", "Files by site and status", ["site", "status"],
                  registry=registry)
    size = Gauge("pnfsmon_bytes", "Bytes of the files by site and status", ["site", "status"],
                 registry=registry)
    for site in summary.sites:
        for status in Status:
            files.labels(site.site, status.label).set(site.counts[status])
            size.labels(site.site, status.label).set(site.sizes[status])
    crawled = Gauge("pnfsmon_last_crawl_timestamp_seconds",
                    "When the last finished crawl of the site ended", ["site"],
                    registry=registry)
    unlisted = Gauge("pnfsmon_last_crawl_unlisted_directories",
                     "Directories the last crawl of the site could not list", ["site"],
                     registry=registry)
    for site in summary.sites:
        if site.crawl is not None and site.crawl.finished:
            crawled.labels(site.site).set(site.crawl.finished)
            unlisted.labels(site.site).set(site.crawl.unreadable_directories)
    catalog = Gauge("pnfsmon_catalog_files", "Files of the latest catalog comparison, by "
                    "kind (missing at the site, orphan, mismatch)", ["site", "kind"],
                    registry=registry)
    published = Gauge("pnfsmon_catalog_compare_published", "1 if the site's latest catalog "
                      "comparison was published, 0 if refused or flagged for a person",
                      ["site"], registry=registry)
    for site in summary.sites:
        if site.compare is not None:
            for kind in Discrepancy:
                catalog.labels(site.site, kind.value).set(getattr(site.compare, kind.value))
            published.labels(site.site).set(site.compare.state is CompareState.PUBLISHED)
    held = Gauge("pnfsmon_incidents_open", "Open incidents of the site (bursts of problems "
                 "held from Rucio until a person decides)", ["site"], registry=registry)
    for site in summary.sites:
        held.labels(site.site).set(sum(i.site == site.site for i in summary.incidents))
    sweep = summary.sweep
    if sweep is not None:
        for name, text, value in (
            ("pnfsmon_sweep_checked_files", "Files checked within the current cycle",
             sweep.checked_in_cycle),
            ("pnfsmon_sweep_checkable_files", "Files to be checked in a cycle",
             sweep.checkable),
            ("pnfsmon_sweep_due_files", "Files due for a check now", sweep.due),
            ("pnfsmon_checks_last_hour", "Checks recorded in the last hour",
             sweep.checked_last_hour),
        ):
            Gauge(name, text, registry=registry).set(value)
    by_reference = Gauge("pnfsmon_files_by_reference", "Listed files by where their "
                         "reference checksum came from (storage, first read) or why they "
                         "have none (none kept, unreadable, not asked, unknown)",
                         ["site", "reference"], registry=registry)
    for site in summary.sites:
        for reference in Reference:
            by_reference.labels(site.site, reference.label).set(
                site.references.get(reference, 0))
    _watchdog_gauges(registry, summary)
    Gauge("pnfsmon_report_timestamp_seconds", "When this report was generated",
          registry=registry).set(summary.generated)
    write_to_textfile(str(path), registry)


def _watchdog_gauges(registry: CollectorRegistry, summary: Summary) -> None:
    """The watchdog (``web.watchdog``), per site; ages in seconds at the report's time (a
    site that never had a verification, a complete crawl or a check has no sample)."""
    overdue = Gauge("pnfsmon_files_overdue", "Files not verified within recheck_after plus "
                    "the overdue slack (never verified: past the grace window plus the slack)",
                    ["site"], registry=registry)
    oldest = Gauge("pnfsmon_oldest_verification_age_seconds",
                   "Age of the oldest verification of a file still listed (to the hour)",
                   ["site"], registry=registry)
    crawl = Gauge("pnfsmon_last_crawl_age_seconds", "Age of the last complete crawl (since "
                  "the first crawl started if none was complete)", ["site"], registry=registry)
    check = Gauge("pnfsmon_last_check_activity_age_seconds", "Age of the last verdict a "
                  "worker recorded (since the first crawl started if none)", ["site"],
                  registry=registry)
    ages = Gauge("pnfsmon_verification_age_files", "Files by the age of their last "
                 "verification (bin: upper bound in days; never: not verified yet)",
                 ["site", "bin"], registry=registry)
    for w in summary.watch:
        overdue.labels(w.site).set(w.overdue)
        for gauge, value in ((oldest, w.oldest_age), (crawl, w.crawl_age),
                             (check, w.check_age)):
            if value is not None:
                gauge.labels(w.site).set(value)
        for (bound, _), n in zip(AGE_BINS, w.histogram, strict=True):
            ages.labels(w.site, "+Inf" if bound == float("inf") else f"{bound:g}").set(n)
        ages.labels(w.site, "never").set(w.never_verified)
