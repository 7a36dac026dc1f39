"""The one definition of pnfs-monitor's tables (SQLAlchemy Core). Every other module imports
its tables from here; ``pnfsmon db ddl`` renders them for a DBA.

How the work queue is indexed (see ``schema.lease``): ``claim_key`` is the time a file is
next due (epoch seconds): its last check plus its site's ``recheck_after`` (the period kept
in ``site_schedule``, ``schema.schedule``); 0 for a file that needs checking now (new,
changed, released, its lease or grace window expired), -1 for one an operator asked for
(``check --prefix/--paths``); NULL while it is leased or when it is not to be checked at
all (vanished, only on tape, changed since listing, in its grace window). A claim reads the
range ``claim_key <= now`` in index order, whatever the mix of sites and their periods, so
claimed rows leave that range and claim cost depends on neither the table size nor the
number of leased rows. Expired leases are found through ``ix_statuses_lease``, which holds
only leased rows' expiry times in its non-NULL part.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

#: The schema's history is a chain of Alembic revisions (``schema/migrations/versions``),
#: one per change to the tables below; this is their order, and the last is what this code
#: needs (``schema.db`` refuses a database at another one, and says what to run). A test
#: holds it equal to the revisions' own chain.
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009",
             "0010", "0011", "0012", "0013", "0014", "0015")
HEAD = REVISIONS[-1]
#: The same, as the number that pnfs-monitor before Alembic kept in ``pnfsmon_meta`` (and
#: each revision still updates): an older pnfs-monitor refuses a database newer than it.
#: 1: the spine; 2: the catalog inventory and compares; 3: the status_counts ledger and
#: statuses.problem_seen; 4: the evidence a crawl keeps (statuses.prior_status,
#: crawls.withheld, acknowledgements); 5: each reference's provenance (statuses.reference,
#: the ledger by it, crawls.checksums_unread); 6: the check_ages ledger;
#: 7: declarations to Rucio; 8: claim_key is the time a file is due, each site's period in
#: site_schedule; 9: one row per file, kind and compare in discrepancies (a unique key, so
#: a batch retried after its commit's answer was lost is not stored twice); 10: confirmation
#: of corrupted verdicts by a second read (statuses.confirm_due, statuses.confirm_from,
#: events.reader); 11: incidents (bursts of problem verdicts held from Rucio); 12: dark
#: data (discrepancies.since, the quarantines table); 13: incremental crawls
#: (``crawl_directories``, statuses.dir_hash, crawls.kind and crawls.skipped_directories);
#: 14: each directory's listing digest (crawl_directories.digest); 15: no index on
#: (statuses.site, statuses.crawl_gen), which no query used.
SCHEMA_VERSION = len(REVISIONS)

# Bytes columns: BLOB/BYTEA hold any path (4 KB and more); a short VARBINARY for the hash
# so MariaDB can index it without a prefix length.
PathBytes = sa.LargeBinary()
HashBytes = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

meta = sa.Table(
    "pnfsmon_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

crawls = sa.Table(
    "crawls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("root", PathBytes, nullable=False),
    sa.Column("started", sa.Double, nullable=False),
    sa.Column("finished", sa.Double),  # NULL while running, or if the crawl died
    sa.Column("complete", sa.Boolean, nullable=False, default=False),
    sa.Column("files", sa.BigInteger, nullable=False, default=0),
    sa.Column("directories", sa.BigInteger, nullable=False, default=0),
    sa.Column("empty_directories", sa.BigInteger, nullable=False, default=0),
    sa.Column("unreadable_directories", sa.BigInteger, nullable=False, default=0),
    sa.Column("bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("new", sa.BigInteger, nullable=False, default=0),
    sa.Column("changed", sa.BigInteger, nullable=False, default=0),
    sa.Column("vanished", sa.BigInteger, nullable=False, default=0),
    sa.Column("skipped", sa.BigInteger, nullable=False, default=0),
    # Files this crawl did not list but refused to mark vanished: too many of the site at
    # once (``max_crawl_drop``), or a root that was full and is now empty. Such a crawl is
    # not complete.
    sa.Column("withheld", sa.BigInteger, nullable=False, default=0, server_default="0"),
    # Files whose recorded checksum the storage could not give (errors left after retries).
    sa.Column("checksums_unread", sa.BigInteger, nullable=False, default=0,
              server_default="0"),
    # 'full' or 'incremental' (``crawler.directories``); NULL: a crawl before revision 0013.
    sa.Column("kind", sa.String(16)),
    # Directories an incremental crawl did not list: unchanged since the last complete crawl,
    # their files carried over. ``directories`` counts the listed ones.
    sa.Column("skipped_directories", sa.BigInteger, nullable=False, default=0,
              server_default="0"),
)

statuses = sa.Table(
    "statuses",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("path", PathBytes, nullable=False),
    sa.Column("path_hash", HashBytes, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    # The reference checksum (8 lower-case hex digits); which interface of the storage
    # gave it or was asked for it: 'xrdcks' (XRootD xattr), 'pnfs', 'chimera', 'xrootd',
    # or 'first_check' when the storage had none and the first computed value became the
    # reference; and its provenance (``schema.reference.Reference``).
    sa.Column("recorded_adler32", sa.String(8)),
    sa.Column("recorded_from", sa.String(16)),
    sa.Column("reference", sa.SmallInteger, nullable=False, default=0, server_default="0"),
    sa.Column("computed_adler32", sa.String(8)),
    sa.Column("status", sa.SmallInteger, nullable=False, default=0),
    sa.Column("checked", sa.Double),  # when the last verdict was recorded (epoch seconds)
    sa.Column("claim_key", sa.Double),  # see the module docstring
    sa.Column("tag", sa.String(96)),  # lease owner "host:pid:random", NULL when not leased
    sa.Column("tag_expiry", sa.Double),
    sa.Column("worker_node", sa.String(255)),
    sa.Column("source_node", sa.String(255)),
    sa.Column("bytes_read", sa.BigInteger),
    sa.Column("error", sa.String(1024)),
    sa.Column("pool", sa.String(255)),
    sa.Column("crawl_gen", sa.Integer, nullable=False),
    # Set when a problem verdict is recorded, kept after: ``pnfsmon db prune`` keeps every
    # check of a file that is or was a problem.
    sa.Column("problem_seen", sa.Boolean, nullable=False, default=False,
              server_default=sa.false()),
    # The status a vanished (or lost) file had when the crawl found it gone: what it gets
    # back if it returns with the same size and mtime (its reference and history are kept).
    sa.Column("prior_status", sa.SmallInteger),
    # A corrupted verdict not confirmed yet (``tester.confirm``): when its second read is
    # due (the file waits outside ``claim_key``'s range until then), and the lease owner
    # of the first read, whom the second read avoids where another worker runs. NULL for
    # every other verdict, and once a second read has judged it.
    sa.Column("confirm_due", sa.Double),
    sa.Column("confirm_from", sa.String(96)),
    # ``path_hash`` of the file's directory: an incremental crawl carries the files of an
    # unchanged directory over by it (``crawler.directories``). NULL only in a row written by
    # hand; revision 0013 fills every row.
    sa.Column("dir_hash", HashBytes),
    sa.UniqueConstraint("site", "path_hash"),
    sa.Index(None, "claim_key"),
    sa.Index("ix_statuses_lease", "tag_expiry"),
    sa.Index(None, "status", "site"),
    sa.Index(None, "confirm_due"),
    sa.Index(None, "site", "dir_hash"),
)

# Each directory as the site's last complete crawl saw it (``crawler.directories``): what an
# incremental crawl stats and compares. Written only when a crawl finishes complete, in the
# transaction that marks it finished, so a crawl that dies leaves the previous state.
# ``unsettled``: the directory must be listed again whatever its mtime (it held a file
# younger than the grace, an empty one or one without a recorded checksum, or its own
# mtime was within the grace).
crawl_directories = sa.Table(
    "crawl_directories",
    metadata,
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("path_hash", HashBytes, nullable=False),
    sa.Column("path", PathBytes, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("unsettled", sa.Boolean, nullable=False),
    sa.Column("crawl_id", sa.Integer, nullable=False),  # the crawl that listed it last
    # What ``statuses`` holds of its files, as a listing's digest (``crawler.digests``);
    # NULL while a crawl below it runs, and where none can be trusted.
    sa.Column("digest", HashBytes),
    sa.PrimaryKeyConstraint("site", "path_hash"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("file_id", sa.BigInteger, sa.ForeignKey("statuses.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("checked", sa.Double, nullable=False),
    sa.Column("worker_node", sa.String(255), nullable=False),
    sa.Column("seconds", sa.Double, nullable=False),
    sa.Column("source_node", sa.String(255)),
    sa.Column("source_pool", sa.String(255)),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("bytes_read", sa.BigInteger, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("computed_adler32", sa.String(8)),
    sa.Column("error", sa.String(1024)),
    # The worker (lease owner, ``host:pid:random``) of a read that takes part in a
    # confirmation (a corrupted first read, or the second read): two reads are independent
    # only if two workers made them. NULL for other reads (the node is in worker_node).
    sa.Column("reader", sa.String(96)),
    sa.Index(None, "file_id", "checked"),
    sa.Index(None, "checked"),
)

# The checking period each site's due times (``statuses.claim_key``) were computed with
# (``schema.schedule``). A site without a row uses the default (30 days); ``apply`` brings
# a row to the configuration's ``recheck_after`` and moves the site's due times with it.
site_schedule = sa.Table(
    "site_schedule",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("recheck_after", sa.Double, nullable=False),  # seconds
)

# Who acknowledged a lost file (``pnfsmon ack``), and when: the record outlives the file's
# row, which is pruned like any vanished one once acknowledged.
acknowledgements = sa.Table(
    "acknowledgements",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("path", PathBytes, nullable=False),
    sa.Column("path_hash", HashBytes, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),  # what it was: missing|corrupted
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("acked_by", sa.String(64), nullable=False),  # the OS user
    sa.Column("acked_at", sa.Double, nullable=False),
    sa.Index(None, "site", "path_hash"),
)

# How many files and bytes each (site, status) holds, as a ledger: every change of a file's
# status or size appends its difference here in the same transaction (``schema.counts``),
# so ``pnfsmon status`` sums a few thousand rows instead of scanning ``statuses``. Rows are
# folded into one per key from time to time. ``reference``: where the files' reference
# checksum came from, or why they have none (``schema.reference.Reference``).
status_counts = sa.Table(
    "status_counts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("reference", sa.SmallInteger, nullable=False),
    sa.Column("files", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
)

# When each site's files were last verified, by the hour, as a ledger kept like
# ``status_counts`` (``schema.ages``): what the watchdog (overdue files, the oldest
# verification, the age histogram, the last check activity) sums instead of scanning
# ``statuses``. ``verified``: the file's status is a verdict on its content (ok or a problem)
# and ``hour`` that of its last check; otherwise (unchecked, changed) ``hour`` is when it
# started waiting for one. ``last_recorded``: when a worker last wrote to the row.
check_ages = sa.Table(
    "check_ages",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("verified", sa.Boolean, nullable=False),
    sa.Column("hour", sa.BigInteger),  # epoch hours; NULL: not known
    sa.Column("files", sa.BigInteger, nullable=False),
    sa.Column("last_recorded", sa.Double),
)

# The catalog's view of a site (``pnfsmon inventory load``). A load's rows become the site's
# inventory when the load is marked complete; the latest complete load is the current one,
# so a reload replaces the previous inventory in one step, and a failed load changes nothing.
inventory_loads = sa.Table(
    "inventory_loads",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("source", sa.String(1024), nullable=False),
    sa.Column("started", sa.Double, nullable=False),
    sa.Column("finished", sa.Double),
    sa.Column("complete", sa.Boolean, nullable=False, default=False),
    sa.Column("entries", sa.BigInteger, nullable=False, default=0),
    sa.Column("unmapped", sa.BigInteger, nullable=False, default=0),  # outside the mapping
    sa.Index(None, "site", "complete"),
)

inventory = sa.Table(
    "inventory",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("load_id", sa.Integer, sa.ForeignKey("inventory_loads.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("lfn", PathBytes, nullable=False),
    sa.Column("path", PathBytes, nullable=False),  # the LFN mapped to the site's storage
    sa.Column("path_hash", HashBytes, nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("adler32", sa.String(8)),
    sa.Column("created", sa.Double),  # when the catalog registered it, if the dump says
    sa.UniqueConstraint("load_id", "path_hash"),
)

# One ``pnfsmon compare`` of a site: what it found, and whether it published it.
compares = sa.Table(
    "compares",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("started", sa.Double, nullable=False),
    sa.Column("finished", sa.Double),
    sa.Column("load_id", sa.Integer),
    sa.Column("crawl_id", sa.Integer),
    # ``schema.discrepancies.CompareState``, by its value: running, then published,
    # refused (the crawl looks incomplete), flagged (too many: for a person) or failed.
    sa.Column("state", sa.String(16), nullable=False, default="running"),
    sa.Column("reason", sa.String(1024)),
    sa.Column("missing", sa.BigInteger, nullable=False, default=0),
    sa.Column("missing_bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("orphan", sa.BigInteger, nullable=False, default=0),
    sa.Column("orphan_bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("mismatch", sa.BigInteger, nullable=False, default=0),
    sa.Column("young", sa.BigInteger, nullable=False, default=0),
    sa.Column("ignored", sa.BigInteger, nullable=False, default=0),
    sa.Index(None, "site", "id"),
)

# Each compare's candidates. A missing or orphan file is listed only when the previous
# compare of the site found it too; older compares' rows are deleted.
discrepancies = sa.Table(
    "discrepancies",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("compare_id", sa.Integer, sa.ForeignKey("compares.id", ondelete="CASCADE"),
              nullable=False),
    # ``schema.discrepancies.Discrepancy``, by its value: missing, orphan or mismatch.
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("path_hash", HashBytes, nullable=False),
    sa.Column("lfn", PathBytes),
    sa.Column("path", PathBytes, nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("detail", sa.String(255)),
    sa.Column("confirmed", sa.Boolean, nullable=False, default=False),
    # When the site's published compares began to find it, without a break: the start of
    # the earliest one (dark data is quarantined only after ``dark_after`` of that).
    sa.Column("since", sa.Double),
    sa.UniqueConstraint("compare_id", "kind", "path_hash"),
)

# Every declaration of a file to Rucio (``pnfsmon declare --apply``), with Rucio's answer:
# what a data manager reads back when asked why a replica was declared bad. A row is
# written only once Rucio answered; a file with a row is not declared again unless it
# checked ok after it. No foreign key to ``statuses``: the record outlives a pruned file.
declarations = sa.Table(
    "declarations",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("file_id", sa.BigInteger, nullable=False),  # statuses.id when declared
    sa.Column("path_hash", HashBytes, nullable=False),
    sa.Column("path", PathBytes, nullable=False),
    sa.Column("rse", sa.String(255), nullable=False),
    sa.Column("scope", sa.String(255), nullable=False),
    sa.Column("name", PathBytes, nullable=False),  # the LFN
    sa.Column("status", sa.SmallInteger, nullable=False),  # the verdict declared
    sa.Column("computed_adler32", sa.String(8)),
    sa.Column("recorded_adler32", sa.String(8)),
    sa.Column("checked", sa.Double),  # when that verdict was recorded
    sa.Column("reason", sa.String(255), nullable=False),  # as sent to Rucio
    sa.Column("declared", sa.Double, nullable=False),  # when Rucio answered
    # declared | already declared | unknown replica | refused (another answer: see answer)
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("answer", sa.String(1024)),  # Rucio's own words, if it said anything
    sa.Index(None, "site", "path_hash"),
)

# A burst of problem verdicts from one pool, one worker node or one hour of a site
# (``schema.incidents``): its files are not declared to Rucio until a person releases the
# incident; dismissing it re-queues them for checking. ``kind``: pool | node | hour;
# ``scope``: the pool's or the node's name (the site's, for an hour); the window is the one
# in which the rule was met (an open incident also takes the scope's later problems).
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("scope", sa.String(255), nullable=False),
    sa.Column("window_start", sa.Double, nullable=False),
    sa.Column("window_end", sa.Double, nullable=False),
    sa.Column("opened", sa.Double, nullable=False),
    sa.Column("problems", sa.BigInteger, nullable=False),  # problem files when opened
    sa.Column("checks", sa.BigInteger, nullable=False),  # files checked in the window then
    sa.Column("state", sa.String(16), nullable=False),  # open | released | dismissed
    sa.Column("decided_by", sa.String(64)),  # who released or dismissed it (the OS user)
    sa.Column("decided_at", sa.Double),
    sa.Index(None, "state", "site"),
)

# The problem checks (``events``) an incident holds, one incident each: a check another
# detection already put in an incident is never counted again, so a burst is one incident
# however often detection runs. No foreign key to ``events`` or ``statuses``: the record
# outlives pruned checks and files.
incident_files = sa.Table(
    "incident_files",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("incident_id", sa.BigInteger,
              sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    sa.Column("file_id", sa.BigInteger, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),  # the verdict of that check
    sa.Column("checked", sa.Double, nullable=False),
    sa.UniqueConstraint("event_id"),
    sa.Index(None, "incident_id"),
    sa.Index(None, "file_id"),
)

# Every dark file sent to Rucio's quarantine (``pnfsmon declare --dark --apply``), with what
# Rucio made of it: a row is written only once Rucio answered, and a file with a row is
# never sent again (the unique key holds that even against a bug).
quarantines = sa.Table(
    "quarantines",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("path_hash", HashBytes, nullable=False),
    sa.Column("path", PathBytes, nullable=False),  # on storage
    sa.Column("rse", sa.String(255), nullable=False),
    sa.Column("scope", sa.String(255), nullable=False),
    sa.Column("name", PathBytes, nullable=False),  # the LFN, sent as name and as path
    sa.Column("size", sa.BigInteger),
    sa.Column("since", sa.Double, nullable=False),  # the first compare that found it dark
    sa.Column("compare_id", sa.Integer, nullable=False),  # the compare that made it due
    sa.Column("quarantined", sa.Double, nullable=False),  # when Rucio answered
    # quarantined | registered replica (Rucio holds it: not dark, not quarantined)
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("answer", sa.String(1024)),  # Rucio's own words, if it said anything
    sa.UniqueConstraint("site", "path_hash"),
)
