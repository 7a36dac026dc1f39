"""What a new site admin meets first: the version, messages that name the fix, Nagios
arguments, the log file, what a stopped check kept, progress lines between batches, plurals,
the commands without ``--db``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

import pnfsmon as pnfsmon_package
from pnfsmon.condor import bundle
from pnfsmon.schema import db
from pnfsmon.schema.config import Settings
from pnfsmon.schema.paths import decode_line, display, encode_line, undisplay
from pnfsmon.schema.tables import events, statuses
from tests.helpers import pnfsmon, write_file


def test_version():
    r = pnfsmon("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"pnfs-monitor {pnfsmon_package.__version__}"
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", pnfsmon_package.__version__)


@pytest.mark.parametrize("url, hint, not_hint", [
    ("mysql://u@127.0.0.1/x", "mysql+pymysql://", "postgresql"),
    ("mariadb+mysqldb://u@127.0.0.1/x", "mysql+pymysql://", "postgresql"),
    ("postgresql+psycopg2://u@127.0.0.1/x", "postgresql+psycopg://", "pymysql"),
    ("postgres://u@127.0.0.1/x", "postgresql+psycopg://", "unsupported database 'sqlite"),
])
def test_a_url_with_a_driver_not_installed_names_the_one_to_use(tmp_path, url, hint,
                                                                not_hint):
    r = pnfsmon("--db", url, "status", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert hint in r.stderr and not_hint not in r.stderr.lower()
    assert r.stderr.count("\n") == 1


def _silent_server() -> tuple[socket.socket, list]:
    """Accepts connections and never says a word (a port that is not MySQL)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list = []

    def serve():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return server, accepted


def test_mysql_on_a_port_that_never_answers_fails_within_the_connect_timeout(tmp_path):
    """PyMySQL's connect timeout covers only the TCP connect; the greeting was awaited for
    ever. (Without the fix this command never ends: the subprocess timeout fails the test.)"""
    server, accepted = _silent_server()
    port = server.getsockname()[1]
    try:
        r = pnfsmon("--db", f"mysql+pymysql://u@127.0.0.1:{port}/x?connect_timeout=1",
                    "status", cwd=tmp_path, timeout=30)
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    assert accepted, "the command never connected"
    assert r.returncode == 3 and "unavailable" in r.stderr and "timed out" in r.stderr
    assert r.stderr.count("\n") == 1


def test_the_connect_timeout_is_lifted_once_connected(engine):
    """Queries may take longer than the handshake's bound."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        if engine.url.get_backend_name() == "mysql":
            assert conn.connection.dbapi_connection._read_timeout is None


@pytest.mark.parametrize("args", [["--warning", "abc"], ["--critical", "1.5x"],
                                  ["--max-crawl-age", "two days"]])
def test_nagios_bad_threshold_is_unknown_not_critical(tmp_path, args):
    r = pnfsmon("status", "--nagios", *args, cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith("PNFSMON UNKNOWN - ") and args[0] in r.stdout


def test_a_log_file_that_cannot_be_opened_is_said_once(tmp_path):
    r = pnfsmon("status", "--log-file", str(tmp_path / "no" / "such" / "x.log"),
                cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("cannot write the log file") == 1, r.stderr


def _slow_tree(tmp_path, files: int) -> str:
    """``files`` files of 50 kB, crawled into a fresh SQLite database; returns its URL."""
    for i in range(files):
        write_file(tmp_path / "t" / f"d{i % 4}" / f"f{i}", b"y" * 50_000)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for args in (["db", "init"], ["crawl", str(tmp_path / "t"), "--grace", "0"]):
        r = pnfsmon(*args, env={"PNFSMON_DB": url})
        assert r.returncode == 0, r.stderr
    return url


def test_progress_lines_come_between_batches(tmp_path):
    """Two workers at 1 MB/s each over 100 files of 50 kB: about 2.5 s of reading, in
    batches of 8 and then of the rest. Progress lines must come every --log-interval,
    counting files as they are read, not only when a batch is recorded."""
    url = _slow_tree(tmp_path, 100)
    r = pnfsmon("check", "--workers", "2", "--max-rate", "1", "--log-interval", "0.2",
                env={"PNFSMON_DB": url})
    assert r.returncode == 0, r.stderr
    counts = [int(n.replace(",", "")) for n in re.findall(r"INFO check: ([\d,]+) files",
                                                          r.stderr)]
    # The batches end at 8, 16 and 100 files: with lines only per batch, no count between
    # 16 and 100 could appear.
    assert len({n for n in counts if 16 < n < 100}) >= 3, r.stderr
    assert "checked 100 files" in r.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_check_says_how_many_files_it_recorded(tmp_path, signum):
    url = _slow_tree(tmp_path, 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_DB"] = url
    proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "check", "--workers", "2",
                             "--max-rate", "1"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    engine = db.create_engine(Settings(url))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until it has recorded its first batches
            with engine.connect() as conn:
                if conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() > 8:
                    break
            time.sleep(0.05)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
        with engine.connect() as conn:
            recorded = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()
            leased = conn.execute(sa.select(sa.func.count())
                                  .where(statuses.c.tag.is_not(None))).scalar()
    finally:
        engine.dispose()
    assert proc.returncode == 130, err
    assert 8 < recorded < 100 and leased == 0
    how = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    assert (f"pnfsmon: error: stopped by {how}: {recorded} files checked and recorded "
            "before stopping") in err, err
    assert err.count("stopped by") == 1 and "Traceback" not in err


def test_one_file_is_one_file(tmp_path):
    write_file(tmp_path / "t" / "only", b"z" * 10)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for args in (["db", "init"], ["crawl", str(tmp_path / "t"), "--grace", "0"]):
        assert pnfsmon(*args, env={"PNFSMON_DB": url}).returncode == 0
    r = pnfsmon("check", "--workers", "1", env={"PNFSMON_DB": url})
    assert r.returncode == 0 and "checked 1 file in" in r.stdout, r.stdout
    assert "checked 1 files" not in r.stdout
    r = pnfsmon("check", "--prefix", str(tmp_path / "t"), env={"PNFSMON_DB": url})
    assert "1 file queued" in r.stdout and "checked 1 file in" in r.stdout, r.stdout


def test_db_ddl_offers_only_the_dialects_it_documents():
    r = pnfsmon("db", "ddl", "--help")
    assert "mysql|mariadb|postgresql|sqlite" in r.stdout
    for dialect in ("oracle", "mssql"):  # SQLAlchemy knows them; pnfs-monitor does not
        r = pnfsmon("db", "ddl", "--dialect", dialect)
        assert r.returncode == 2 and "unknown dialect" in r.stderr and not r.stdout
    assert "CREATE TABLE statuses" in pnfsmon("db", "ddl", "--dialect", "sqlite").stdout


def test_demo_offers_no_db_and_names_its_dir_argument(tmp_path):
    help_text = pnfsmon("demo", "--help").stdout
    assert "--db URL" not in help_text and "--log-file" in help_text
    r = pnfsmon("--db", f"sqlite:///{tmp_path / 'x.sqlite'}", "demo", str(tmp_path / "d"))
    assert r.returncode == 2 and "demo takes no --db" in r.stderr
    assert not (tmp_path / "d").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "something").write_text("")
    r = pnfsmon("demo", str(tmp_path / "d"))
    assert r.returncode == 2 and "name another DIR, e.g. pnfsmon demo " in r.stderr


@given(st.binary(max_size=40))
def test_the_escaped_form_reads_back(path):
    assert undisplay(display(path)) == path
    assert decode_line(encode_line(path)) == path


def test_history_accepts_every_form_the_tool_prints(tmp_path, db_url):
    name = b"odd name\n%41\\ \xff\tend.dat"
    path = write_file(os.path.join(os.fsencode(tmp_path), b"t", name), b"data")
    env = {"PNFSMON_DB": db_url}
    for args in (["crawl", str(tmp_path / "t"), "--grace", "0"], ["check", "--workers", "1"]):
        assert pnfsmon(*args, env=env).returncode == 0
    forms = {"raw": os.fsdecode(path), "list": encode_line(path), "log/html": display(path)}
    assert len(set(forms.values())) == 3
    for form, text in forms.items():
        r = pnfsmon("history", text, env=env)
        assert r.returncode == 0, (form, r.stderr)
        assert r.stdout.startswith(display(path) + " (site ") and "ok" in r.stdout, form
    r = pnfsmon("history", display(path) + "x", env=env)
    assert r.returncode == 2 and "is not in the database" in r.stderr


def test_commands_without_a_database_refuse_db(tmp_path):
    """The README lists them: demo, db ddl, condor bundle."""
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    for args in (["demo", str(tmp_path / "d")], ["db", "ddl"],
                 ["condor", "bundle", str(tmp_path / "b.pyz")]):
        r = pnfsmon("--db", url, *args, cwd=tmp_path)
        assert r.returncode == 2 and "takes no --db" in r.stderr, args
    assert not list(tmp_path.iterdir())


def _fake_bundle(path, version: str | None) -> None:
    """A zip laid out as a bundle, as an older pnfs-monitor would have built it."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__main__.py", "")
        if version is not None:
            zf.writestr(bundle.VERSION_FILE, version + "\n")


def test_a_bundle_records_its_version(tmp_path):
    path = bundle.build(tmp_path / "pnfsmon.pyz")
    assert bundle.version_of(path) == pnfsmon_package.__version__ and bundle.stale(path) is None
    r = subprocess.run([sys.executable, str(path), "--version"], capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip() == f"pnfs-monitor {pnfsmon_package.__version__}"


@pytest.mark.parametrize("built", [None, "0.0.1"])
def test_condor_commands_warn_of_a_bundle_older_than_the_installed_version(tmp_path,
                                                                          built):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert pnfsmon("db", "init", "--db", url).returncode == 0
    workdir = tmp_path / "nightly"
    workdir.mkdir()
    _fake_bundle(workdir / "pnfsmon.pyz", built)
    r = pnfsmon("condor", "status", "--workdir", str(workdir), "--db", url)
    assert r.returncode == 0, r.stderr
    assert f"WARNING the bundle {workdir / 'pnfsmon.pyz'} was built by" in r.stderr
    assert "rebuild it" in r.stderr and pnfsmon_package.__version__ in r.stderr
    # --executable pointing at an old bundle: the same warning.
    r = pnfsmon("condor", "submit", "--dry-run", "--executable",
                str(workdir / "pnfsmon.pyz"), "--db", "mysql+pymysql://u@dbhost/x")
    assert r.returncode == 0 and "rebuild it" in r.stderr, r.stderr
    _fake_bundle(workdir / "pnfsmon.pyz", pnfsmon_package.__version__)
    r = pnfsmon("condor", "status", "--workdir", str(workdir), "--db", url)
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr


@pytest.mark.parametrize("host, warned", [("127.0.0.1", True), ("localhost:3307", True),
                                          ("dbhost.example.org", False)])
def test_a_submit_file_for_a_local_database_gets_a_warning(tmp_path, host, warned):
    for command in (["submit", "--dry-run"], ["submit-crawl", "/data", "--dry-run"]):
        r = pnfsmon("condor", *command, "--executable", "/cvmfs/x/pnfsmon",
                    "--db", f"mysql+pymysql://pnfsmon@{host}/pnfsmon", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert ("on a worker node that is the node itself" in r.stderr) is warned, r.stderr


@pytest.mark.parametrize("module, extra, args", [
    ("htcondor2", "htcondor", ["condor", "submit", "--dry-run", "--executable", "/x/pnfsmon",
                               "--db", "mysql+pymysql://u@dbhost/x"]),
    ("XRootD", "xrootd", ["crawl", "root://127.0.0.1:1//data", "--db", "sqlite:///db.sqlite"]),
])
def test_a_missing_optional_binding_is_one_line_naming_its_extra(tmp_path, module, extra,
                                                                  args):
    if args[0] == "crawl":
        assert pnfsmon("db", "init", "--db", "sqlite:///db.sqlite", cwd=tmp_path
                       ).returncode == 0
    # in a Python where the module cannot be imported (its extra not installed)
    r = pnfsmon(*args, cwd=tmp_path, before=f"sys.modules[{module!r}] = None")
    assert r.returncode == 2, r.stderr
    assert f"pip install 'pnfs-monitor[{extra}]'" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_the_demo_needs_neither_binding(tmp_path):
    """What `pip install . && pnfsmon demo` promises a POSIX-only site."""
    r = pnfsmon("demo", str(tmp_path / "demo"),
                before="sys.modules['htcondor2'] = None; sys.modules['XRootD'] = None; "
                "sys.modules['pyxrootd'] = None")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo" / "report" / "index.html").is_file()


def test_log_lines_carry_their_time_zone(tmp_path):
    log_file = tmp_path / "pnfsmon.log"
    r = pnfsmon("status", "--log-file", str(log_file), cwd=tmp_path,
                env={"TZ": "Asia/Kolkata"})
    assert r.returncode == 2
    line = log_file.read_text().strip()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST ERROR pnfsmon: error: ", line), line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_crawl_says_how_many_files_it_recorded(tmp_path, signum):
    for d in range(30):
        os.makedirs(tmp_path / "t" / f"d{d}")
        for i in range(1000):
            (tmp_path / "t" / f"d{d}" / f"f{i}").touch()
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert pnfsmon("db", "init", "--db", url).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "crawl", str(tmp_path / "t"),
                             "--grace", "0", "--log-interval", "0.1", "--db", url],
                            env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # stop it part-way, once it has listed a good part
        listed = re.search(r"INFO crawl of .*: ([\d,]+) ", line)
        if listed and int(listed[1].replace(",", "")) > 12_000:
            proc.send_signal(signum)
            break
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, err
    engine = db.create_engine(Settings(url))
    with engine.connect() as conn:
        recorded = conn.execute(sa.select(sa.func.count()).select_from(statuses)).scalar()
        vanished = conn.execute(sa.select(sa.func.count()).where(statuses.c.status == 7)
                                ).scalar()
    engine.dispose()
    how = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    stopped = re.search(rf"pnfsmon: error: crawl stopped by {how} after listing ([\d,]+) "
                        r"files \(([\d,]+) new and 0 changed recorded\); it stays incomplete",
                        err)
    assert stopped, err
    assert int(stopped[2].replace(",", "")) == recorded < 30_000 and vanished == 0
    assert 12_000 < int(stopped[1].replace(",", "")) < 30_000
    assert "Traceback" not in err


def test_a_stop_that_lands_while_a_line_is_logged_still_stops():
    """SIGTERM raises Interrupted wherever the main thread is, often inside a log write;
    logging's handleError would print it and carry on."""
    import logging

    from pnfsmon.schema import logs
    from pnfsmon.schema.errors import Interrupted

    class Stopping:
        def write(self, _text):
            raise Interrupted("stopped by SIGTERM")

        def flush(self):
            pass

        def isatty(self):
            return False

    logs.setup()
    console = next(h for h in logging.getLogger().handlers if getattr(h, "pnfsmon", False))
    console.setStream(Stopping())
    try:
        with pytest.raises(Interrupted):
            logging.getLogger("pnfsmon.test").warning("a line")
    finally:
        console.setStream(sys.stderr)
        logs.setup()
