"""Logs as cron, systemd and HTCondor see them (stderr not a terminal): times and levels,
periodic progress lines, one WARNING per problem as it is found, --quiet, --verbose,
--log-file (with the command's result and its final error, never a password); and the
progress line with its total and ETA on a real terminal (a pty)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from tests.helpers import assert_no_secret, flip_bit, pnfsmon, random_bytes, write_file

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+"  # local time and its zone


def environment(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env["PNFSMON_DB"] = url
    return env


def lines(text: str, level: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(rf"{STAMP} {level} ", line)]


def test_unattended_logs_progress_problems_and_outcome(tmp_path, tree):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    files = [write_file(tree / f"d{i % 7}" / f"f{i}.dat", random_bytes(2000, i), record=True)
             for i in range(3000)]
    assert pnfsmon("db", "init", env={"PNFSMON_DB": url}).returncode == 0
    log_file = tmp_path / "pnfsmon.log"
    r = pnfsmon("crawl", str(tree), "--grace", "0", "--log-interval", "0.01",
                "--log-file", str(log_file), env={"PNFSMON_DB": url})
    assert r.returncode == 0, r.stderr
    progress = lines(r.stderr, "INFO")
    assert progress and all(f"crawl of {tree}: " in line for line in progress)
    assert "crawled" in r.stdout and "crawled" not in r.stderr  # the result: stdout...
    logged = log_file.read_text()
    assert re.search(rf"{STAMP} INFO crawled {re.escape(str(tree))} ", logged)  # ...and file

    flip_bit(files[5], 10)
    os.unlink(files[9])
    r = pnfsmon("check", "--workers", "2", "--log-interval", "0.01", "--log-file",
                str(log_file), env={"PNFSMON_DB": url})
    assert r.returncode == 1, r.stderr
    warnings = lines(r.stderr, "WARNING")
    assert sorted(w.split(" WARNING ", 1)[1].split(":", 1)[0] for w in warnings) == [
        f"corrupted {files[5].decode()}", f"missing {files[9].decode()}"]
    assert any("adler32" in w and "recorded" in w for w in warnings)
    assert any(re.search(r"check: [\d,]+ files, [\d,]+/s; .* read, .*/s, \d+ problems", line)
               for line in lines(r.stderr, "INFO"))
    assert "ok 2,998, corrupted 1, missing 1" in log_file.read_text()

    # --quiet: the warnings, no progress; --verbose: DEBUG lines too.
    r = pnfsmon("check", "--recheck-after", "0", "--quiet", "--log-interval", "0.01",
                env={"PNFSMON_DB": url})
    assert r.returncode == 1 and not lines(r.stderr, "INFO") and lines(r.stderr, "WARNING")
    r = pnfsmon("check", "--recheck-after", "0", "-v", env={"PNFSMON_DB": url})
    assert lines(r.stderr, "DEBUG")


def test_the_final_error_is_one_line_and_logged_without_the_password(tmp_path):
    log_file = tmp_path / "pnfsmon.log"
    secret = "L0g-S3cret@x"
    url = "mysql+pymysql://mon:L0g-S3cret%40x@127.0.0.1:1/pn"
    r = pnfsmon("status", "--log-file", str(log_file), env={"PNFSMON_DB": url})
    assert r.returncode == 3 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("pnfsmon: error: ")
    logged = log_file.read_text()
    assert re.match(rf"{STAMP} ERROR pnfsmon: error: ", logged)
    assert_no_secret(r.stderr + logged, secret)
    r = pnfsmon("status", "--log-file", str(tmp_path / "no" / "such" / "dir.log"),
                env={"PNFSMON_DB": "sqlite:///x.sqlite"})
    assert r.returncode == 2 and "cannot write the log file" in r.stderr


def test_progress_on_a_terminal_has_the_total_and_an_eta(tmp_path, tree):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for i in range(4000):
        write_file(tree / f"d{i % 10}" / f"f{i}.dat", b"x" * 20_000)
    for args in (["db", "init"], ["crawl", str(tree), "--grace", "0"]):
        assert pnfsmon(*args, env={"PNFSMON_DB": url}).returncode == 0
    main, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pnfsmon", "check", "--workers", "1",
                             "--max-rate", "25"],  # about 3 s: progress is drawn each second
                            env=environment(url), stdout=secondary, stderr=secondary)
    os.close(secondary)
    out = b""
    while True:  # read as it comes: a full terminal buffer would block the command
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0
    text = out.decode()
    assert re.search(r"\r\x1b\[Kcheck: [\d,]+ of 4,000 files \(\d+ %\), [\d,]+/s, ETA ", text)
    assert "checked 4,000 files" in text


def test_a_connection_the_pool_could_not_reset_is_one_line_on_the_console(tmp_path):
    """SQLAlchemy's pool logs a connection the server killed with a traceback: on the
    console it is one line (the command deals with the loss), the log file keeps all."""
    log = tmp_path / "pnfsmon.log"
    code = ("import logging\nfrom pnfsmon.schema import logs\n"
            "logs.setup(log_file=%r)\n"
            "try:\n    raise ConnectionResetError('Lost connection to server')\n"
            "except OSError:\n"
            "    logging.getLogger('sqlalchemy.pool.impl.QueuePool').error("
            "'Exception during reset or similar', exc_info=True)\n")
    for where in (None, str(log)):
        r = subprocess.run([sys.executable, "-c", code % where], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert ("ERROR database connection dropped (Exception during reset or similar): "
                "ConnectionResetError: Lost connection to server") in r.stderr
    assert "Traceback" in log.read_text()
