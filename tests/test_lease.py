"""The work queue: claim order, leases that expire, verdicts dropped when a lease is lost,
concurrent claimers that never share a row, and a claim served by its index alone."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pnfsmon.schema import counts, db, migrate
from pnfsmon.schema.config import Settings
from pnfsmon.schema.lease import Lease, Verdict
from pnfsmon.schema.status import Status
from pnfsmon.schema.tables import events, site_schedule, statuses


def add_rows(engine, n: int, *, claim_key: float = 0.0, start: int = 0) -> None:
    with engine.begin() as conn:
        conn.execute(statuses.insert(), [
            {"site": "s", "path": f"/f{i:06d}".encode(), "path_hash": i.to_bytes(16, "big"),
             "size": 1, "mtime_ns": 1, "status": 0, "claim_key": claim_key, "crawl_gen": 1}
            for i in range(start, start + n)
        ])
        counts.recount(conn)  # rows written by hand: the ledger made to match them


def ok(item) -> Verdict:
    return Verdict(item.id, Status.OK, seconds=0.01, size=1, bytes_read=1,
                   computed_adler32="00020002")


def test_claim_order_and_recheck_cutoff(engine):
    add_rows(engine, 3, claim_key=1000.0)  # due at t=1000
    add_rows(engine, 2, claim_key=0.0, start=10)  # never checked
    lease = Lease(engine, lease_seconds=60)
    first = lease.claim(10, due_before=500.0, now=2000.0)
    assert sorted(c.path for c in first) == [b"/f000010", b"/f000011"]  # only the new ones
    more = lease.claim(10, due_before=1500.0, now=2000.0)
    assert len(more) == 3
    assert lease.claim(10, due_before=1e12, now=2000.0) == []  # all leased now


def test_claimed_rows_are_not_claimed_again_until_the_lease_expires(engine):
    add_rows(engine, 4)
    a = Lease(engine, lease_seconds=100, owner="a")
    b = Lease(engine, lease_seconds=100, owner="b")
    got_a = a.claim(4, due_before=1e12, now=1000.0)
    assert len(got_a) == 4
    assert b.claim(4, due_before=1e12, now=1050.0) == []
    got_b = b.claim(4, due_before=1e12, now=1101.0)  # a died: its lease expired
    assert {c.id for c in got_b} == {c.id for c in got_a}
    # a comes back late: its verdicts are dropped, b's are kept.
    assert a.record([ok(c) for c in got_a], now=1102.0) == []
    assert sorted(b.record([ok(c) for c in got_b], now=1103.0)) == sorted(c.id for c in got_b)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 4
        leased = conn.execute(sa.select(sa.func.count()).where(statuses.c.tag.is_not(None)))
        assert leased.scalar() == 0


def test_renew_keeps_the_lease_and_release_gives_rows_back(engine):
    add_rows(engine, 2)
    a = Lease(engine, lease_seconds=100, owner="a")
    b = Lease(engine, lease_seconds=100, owner="b")
    rows = a.claim(2, due_before=1e12, now=1000.0)
    a.renew([r.id for r in rows], now=1090.0)
    assert b.claim(2, due_before=1e12, now=1150.0) == []  # renewed until 1190
    a.release([rows[0].id])
    again = b.claim(2, due_before=1e12, now=1151.0)
    assert [r.id for r in again] == [rows[0].id]


def test_first_check_sets_the_reference(engine):
    add_rows(engine, 1)
    lease = Lease(engine, lease_seconds=100)
    (item,) = lease.claim(1, due_before=1e12)
    lease.record([Verdict(item.id, Status.OK, 0.1, 1, 1, computed_adler32="0abc0def")])
    with engine.connect() as conn:
        r = conn.execute(sa.select(statuses)).one()
    assert (r.recorded_adler32, r.recorded_from, r.status) == ("0abc0def", "first_check", 1)


def test_concurrent_claimers_never_share_a_row(db_url):
    engine = db.create_engine(Settings(db_url))
    add_rows(engine, 600)
    claimed: list[list[int]] = []
    errors = []
    sweep_start = time.time()  # rows recorded during the sweep are not due again in it

    def worker(n):
        eng = db.create_engine(Settings(db_url))
        lease = Lease(eng, lease_seconds=300, owner=f"w{n}")
        mine = []
        try:
            while batch := lease.claim(25, due_before=sweep_start):
                mine.extend(c.id for c in batch)
                lease.record([ok(c) for c in batch])
        except Exception as err:  # reported below; a thread cannot fail the test itself
            errors.append(err)
        claimed.append(mine)
        eng.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    all_ids = [i for mine in claimed for i in mine]
    assert len(all_ids) == 600 and len(set(all_ids)) == 600
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 600
    engine.dispose()


@pytest.mark.hand_written_rows
def test_claim_is_served_by_the_claim_key_index(engine):
    """The statement ``Lease.claim`` runs (with ``site`` and ``--max-per-pool``, and with a
    ``--recheck-after`` over two sites' periods) reads a range of the claim index in its
    order: no full scan of ``statuses``, no sort (MariaDB's SKIP LOCKED needs exactly that,
    FIELD-NOTES)."""
    backend = engine.dialect.name
    if backend not in ("mysql", "mariadb", "postgresql"):
        pytest.skip("SQLite takes no row locks: BEGIN IMMEDIATE serialises its claims")
    now = 2e9
    with engine.begin() as conn:  # a site's life: most files checked and not due, some due
        conn.execute(statuses.insert(), [
            {"site": "AB"[i % 2], "path": f"/f{i:06d}".encode(),
             "path_hash": i.to_bytes(16, "big"), "size": 1, "mtime_ns": 1, "status": 1,
             "claim_key": now + 86400.0 * (i % 30) - 86400.0 * 3, "crawl_gen": 1,
             "pool": f"pool-{i % 7}", "tag": "w:1:x" if i % 50 == 0 else None,
             "tag_expiry": now + 600 if i % 50 == 0 else None}
            for i in range(20000)])
        conn.execute(site_schedule.insert(), [{"site": "A", "recheck_after": 86400.0},
                                              {"site": "B", "recheck_after": 30 * 86400.0}])
        conn.exec_driver_sql("ANALYZE TABLE statuses" if backend != "postgresql"
                             else "ANALYZE statuses")
    lease = Lease(engine, owner="me:1:y")
    for kw in ({"site": "A", "max_per_pool": 2}, {"recheck_after": 7 * 86400.0,
                                                   "periods": {"A": 86400.0,
                                                               "B": 30 * 86400.0}}):
        query = lease.claim_query(100, now, now=now, **kw)
        sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        with engine.connect() as conn:
            if backend == "postgresql":
                plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + sql).scalars())
                # Limit, LockRows, then the claim index, in its order (no Sort above it);
                # the busy pools' subplan reads the few leased rows by the lease index.
                above, _, below = plan.partition("Index Scan using ix_statuses_claim_key")
                assert below.split("\n")[1].strip().startswith("Index Cond: (claim_key <="), plan
                assert "Sort" not in above and "Seq Scan" not in plan, plan
            else:
                plan = conn.exec_driver_sql("EXPLAIN " + sql).mappings().all()
                # A range of the claim index, in its order (MariaDB may add a rowid filter
                # from the site index: "range|filter"); only the busy pools' subquery over
                # the few leased rows (the lease index) sorts, for its GROUP BY.
                outer = plan[0]
                assert outer["table"] == "statuses" and outer["type"].startswith("range"), plan
                assert outer["key"].split("|")[0] == "ix_statuses_claim_key", plan
                assert "filesort" not in (outer["Extra"] or ""), plan
                assert all(row["key"] == "ix_statuses_lease" for row in plan[1:]), plan
    engine.dispose()


class LeaseMachine(RuleBasedStateMachine):
    """Random interleavings of claim, time passing (leases expiring) and record among three
    workers on one queue, checked against a model: a claim returns only rows that are due
    and unleased (or whose lease expired), as many as are available up to the limit; a
    verdict is accepted exactly when the recording worker still holds the row's lease, so
    no row is ever judged by two workers for one claim."""

    ROWS = 8
    RECHECK = 5.0
    LEASE = 10.0

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="pnfsmon-lease-")
        self.engine = db.create_engine(Settings(f"sqlite:///{self.dir}/q.sqlite"))
        migrate.upgrade(self.engine)
        add_rows(self.engine, self.ROWS)
        with self.engine.begin() as conn:  # the site's period: a verdict is due again after it
            conn.execute(site_schedule.insert().values(site="s", recheck_after=self.RECHECK))
        with self.engine.connect() as conn:
            ids = conn.execute(sa.select(statuses.c.id)).scalars().all()
        self.now = 1000.0
        self.workers = [Lease(self.engine, lease_seconds=self.LEASE, owner=f"w{i}")
                        for i in range(3)]
        self.held: dict[int, set[int]] = {i: set() for i in range(3)}
        # The model: owner and lease expiry per row, and when it is due (claim_key).
        self.owner: dict[int, int | None] = dict.fromkeys(ids)
        self.expiry: dict[int, float] = dict.fromkeys(ids, 0.0)
        self.key: dict[int, float | None] = dict.fromkeys(ids, 0.0)

    def _requeue_expired(self):
        for i, w in self.owner.items():
            if w is not None and self.expiry[i] < self.now:
                self.owner[i], self.key[i] = None, 0.0

    @rule(w=st.integers(0, 2), n=st.integers(1, 4))
    def claim(self, w, n):
        self._requeue_expired()
        cutoff = self.now
        claimable = {i for i, o in self.owner.items()
                     if o is None and self.key[i] is not None and self.key[i] <= cutoff}
        got = {c.id for c in self.workers[w].claim(n, due_before=cutoff, now=self.now)}
        assert got <= claimable
        assert len(got) == min(n, len(claimable))
        for i in got:
            self.owner[i], self.expiry[i], self.key[i] = w, self.now + self.LEASE, None
        self.held[w] |= got

    @rule(dt=st.floats(0.5, 12))
    def time_passes(self, dt):
        self.now += dt

    @rule(w=st.integers(0, 2))
    def record(self, w):
        ids = sorted(self.held[w])
        if not ids:
            return
        kept = set(self.workers[w].record(
            [Verdict(i, Status.OK, 0.1, 1, 1, computed_adler32="00020002") for i in ids],
            now=self.now))
        assert kept == {i for i in ids if self.owner[i] == w}
        for i in kept:
            self.owner[i], self.key[i] = None, self.now + self.RECHECK
        self.held[w] = set()

    @invariant()
    def database_matches_model(self):
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(statuses.c.id, statuses.c.tag)).all()
        for i, tag in rows:
            expected = None if self.owner[i] is None else f"w{self.owner[i]}"
            assert tag == expected

    def teardown(self):
        self.engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)


TestLeaseInterleavings = LeaseMachine.TestCase
TestLeaseInterleavings.settings = settings(max_examples=40, stateful_step_count=25,
                                           deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])


def test_max_per_pool_skips_pools_with_enough_readers(engine):
    add_rows(engine, 30)
    with engine.begin() as conn:  # 10 files on pool-a, 10 on pool-b, 10 with no pool
        conn.execute(statuses.update().where(statuses.c.id <= 10).values(pool="pool-a"))
        conn.execute(statuses.update().where(statuses.c.id.between(11, 20))
                     .values(pool="pool-b"))
    readers = [Lease(engine, lease_seconds=100, owner=f"r{i}") for i in range(3)]
    # Two other workers are reading pool-a right now; a third one's lease has expired.
    for reader, pool in ((readers[0], "pool-a"), (readers[1], "pool-a")):
        with engine.begin() as conn:
            first = conn.execute(sa.select(statuses.c.id).where(
                statuses.c.pool == pool, statuses.c.tag.is_(None))).first()[0]
            conn.execute(statuses.update().where(statuses.c.id == first).values(
                tag=reader.owner, tag_expiry=1100.0, claim_key=None))
    me = Lease(engine, lease_seconds=100, owner="me")
    capped = me.claim(100, due_before=1e12, now=1000.0, max_per_pool=2)
    assert {c.pool for c in capped} == {"pool-b", None}
    me.release(c.id for c in capped)
    uncapped = me.claim(100, due_before=1e12, now=1000.0, max_per_pool=3)
    assert {c.pool for c in uncapped} == {"pool-a", "pool-b", None}
    me.release(c.id for c in uncapped)
    later = me.claim(100, due_before=1e12, now=1200.0, max_per_pool=2)  # their leases expired
    assert "pool-a" in {c.pool for c in later}


def test_a_retried_claim_takes_back_what_its_lost_commit_claimed(engine, monkeypatch):
    """The claim committed, but the answer never reached the worker (the connection died on
    the way back: injected after the real commit); the retry of that claim gets those rows
    instead of stranding them for a lease and claiming more."""
    import contextlib

    import pymysql

    from pnfsmon.schema import lease as lease_module

    add_rows(engine, 6)
    real = lease_module.write_transaction
    lost = []

    @contextlib.contextmanager
    def commit_then_lose_the_answer(eng):
        with real(eng) as conn:
            yield conn
        if not lost:  # the first transaction only: it has committed
            lost.append(True)
            raise sa.exc.OperationalError(
                "COMMIT", {}, pymysql.err.OperationalError(2013, "Lost connection"))

    monkeypatch.setattr(lease_module, "write_transaction", commit_then_lose_the_answer)
    lease = Lease(engine, lease_seconds=100, owner="w")
    got = lease.claim(3, due_before=1e12, now=1000.0)
    assert lost and len(got) == 3
    with engine.connect() as conn:
        leased = conn.execute(sa.select(statuses.c.id).where(statuses.c.tag.is_not(None)))
        assert sorted(leased.scalars()) == sorted(c.id for c in got)  # none stranded


def test_a_site_claim_takes_only_that_sites_files(engine):
    with engine.begin() as conn:
        conn.execute(statuses.insert(), [
            {"site": site, "path": f"/{site}/f{i}".encode(),
             "path_hash": f"{site}{i}".encode().ljust(16, b"."), "size": 1, "mtime_ns": 1,
             "status": 0, "claim_key": float(i), "crawl_gen": 1}
            for site in ("A", "B") for i in range(5)])
        counts.recount(conn)
    lease = Lease(engine, lease_seconds=60)
    got = lease.claim(10, due_before=1e12, site="B")
    assert sorted(c.path for c in got) == [f"/B/f{i}".encode() for i in range(5)]
    assert {c.site for c in lease.claim(10, due_before=1e12)} == {"A"}
