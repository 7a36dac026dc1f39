"""The configuration file: read once per command, every section and key checked, the
database's origin named in messages, and no password in any repr."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pnfsmon.schema import config
from pnfsmon.schema.config import Settings
from pnfsmon.schema.errors import ConfigError
from tests.helpers import DB_SECRET, pnfsmon, write_file


@pytest.mark.parametrize(("text", "says"), [
    ("[pnfsmom]\ndb = mysql+pymysql://mon@db.example/pn\n",
     "unknown section [pnfsmom]; did you mean [pnfsmon]?"),
    ("[stie T2_XX]\ngrace = 1\n", "unknown section [stie T2_XX]; did you mean [site T2_XX]?"),
    ("[pnfsmon]\ndb_pasword_file = /etc/pw\n",
     "[pnfsmon]: unknown key 'db_pasword_file'; did you mean db_password_file?"),
    ("[site T2_XX]\nrecheck_afer = 7\n",
     "[site T2_XX]: unknown key 'recheck_afer'; did you mean recheck_after?"),
    ("[pnfsmon]\nrecheck_after = 7\n",
     "[pnfsmon]: recheck_after is a site's setting: put it in a [site NAME] section"),
])
def test_a_misspelt_configuration_is_an_error_not_a_fallback(tmp_path, text, says):
    (tmp_path / "pnfsmon.conf").write_text(text)
    for argv in (["status"], ["db", "init"]):
        r = pnfsmon(*argv, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        line, = r.stderr.strip().splitlines()
        assert line == f"pnfsmon: error: {tmp_path / 'pnfsmon.conf'}: {says}"
    # Nothing fell back to the default database: no stray SQLite file to use from then on.
    assert not (tmp_path / "pnfsmon.sqlite").exists()


def test_messages_say_where_the_database_came_from(tmp_path):
    r = pnfsmon("status", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert r.returncode == 2
    assert "[database from the built-in default: no configuration file in pnfsmon.conf" \
        in r.stderr
    (tmp_path / "pnfsmon.conf").write_text("[site T2_XX]\ngrace = 1\n")
    r = pnfsmon("status", cwd=tmp_path)
    assert f"[database from the built-in default: {tmp_path / 'pnfsmon.conf'} sets no db]" \
        in r.stderr
    other = tmp_path / "other.sqlite"
    r = pnfsmon("status", cwd=tmp_path, env={"PNFSMON_DB": f"sqlite:///{other}"})
    assert f"no database file {other} [database from PNFSMON_DB]" in r.stderr


def test_no_password_in_any_repr(monkeypatch):
    settings = Settings("mysql+pymysql://mon:Url-S3cret@db/pn", db_password="File-S3cret")
    for text in (repr(settings), str(settings)):
        assert "S3cret" not in text
        assert "mysql+pymysql://mon:***@db/pn" in text


def test_a_password_in_the_environment_is_not_sqlites(tmp_path):
    db = f"sqlite:///{tmp_path / 'plain.sqlite'}"
    env = {"PNFSMON_DB_PASSWORD": "for-the-mariadb"}
    assert pnfsmon("db", "init", "--db", db, cwd=tmp_path, env=env).returncode == 0
    r = pnfsmon("status", "--db", db, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr


def test_sites_come_with_the_settings(tmp_path, monkeypatch):
    conf = tmp_path / "site.conf"
    conf.write_text("[pnfsmon]\ndb = sqlite:///x.sqlite\n[site A]\nrecheck_after = 7\n"
                    "grace = 1\n[site B]\nnamespace = /data/b\n")
    monkeypatch.setenv("PNFSMON_CONFIG", str(conf))
    settings = config.load()
    assert settings.site("A").recheck_after == 7 * 86400
    assert settings.site("A").grace == 3600
    assert settings.site("B").namespace == "/data/b"
    assert settings.site("unconfigured").recheck_after == 30 * 86400
    assert settings.db_source == f"db = in {conf}"
    conf.write_text("[site A]\nrecheck_after = soon\n")
    with pytest.raises(ConfigError, match=r"recheck_after = 'soon' is not a number"):
        config.load()


def test_one_command_reads_the_configuration_and_password_file_once(
        tmp_path, mariadb_with_password):
    """``check --site`` used to open the configuration 4 times and the password file 3."""
    conf, secret = tmp_path / "pnfsmon.conf", tmp_path / "db.password"
    secret.write_text(DB_SECRET + "\n")
    secret.chmod(0o600)
    conf.write_text(f"[pnfsmon]\ndb = {mariadb_with_password}\ndb_password_file = {secret}\n"
                    "[site S]\nrecheck_after = 3\n")
    assert pnfsmon("db", "init", cwd=tmp_path).returncode == 0
    script = textwrap.dedent(f"""
        import sys
        opened = []
        def audit(event, args):
            if event == "open" and isinstance(args[0], str):
                opened.append(args[0])
        sys.addaudithook(audit)
        from pnfsmon.cli import main
        code = main(["check", "--site", "S", "--workers", "1"])
        print(opened.count({str(conf)!r}), opened.count({str(secret)!r}), code)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                          if not k.startswith("PNFSMON_")}, timeout=120)
    assert r.stdout.splitlines()[-1].split() == ["1", "1", "0"], r.stdout + r.stderr


def test_an_unknown_site_or_an_empty_prefix_is_an_error(tmp_path):
    """``check --site <typo>`` and ``check --prefix <nowhere>`` used to exit 0 having done
    nothing: a person would believe they were checked."""
    db = f"sqlite:///{tmp_path / 'sites.sqlite'}"
    tree = tmp_path / "store"
    for i in range(3):
        write_file(tree / f"f{i}", b"%d" % i)
    assert pnfsmon("db", "init", "--db", db, cwd=tmp_path).returncode == 0
    assert pnfsmon("crawl", str(tree), "--site", "T2_A", "--grace", "0", "--db", db,
                   cwd=tmp_path).returncode == 0
    r = pnfsmon("check", "--site", "T2_B", "--db", db, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "pnfsmon: error: --site T2_B: no such site in the configuration (no file) or the "
        "database (sites there: T2_A)"]
    r = pnfsmon("check", "--prefix", str(tmp_path / "nowhere"), "--db", db, cwd=tmp_path)
    assert r.returncode == 2 and "no file below it is in the database" in r.stderr
    assert pnfsmon("check", "--site", "T2_A", "--db", db, cwd=tmp_path).returncode == 0
    r = pnfsmon("check", "--prefix", str(tree), "--db", db, cwd=tmp_path)
    assert r.returncode == 0 and "3 files queued" in r.stdout  # checked, so due only now
    (tmp_path / "pnfsmon.conf").write_text("[site T2_NEW]\ngrace = 1\n")
    r = pnfsmon("check", "--site", "T2_NEW", "--db", db, cwd=tmp_path)
    assert r.returncode == 0
    assert "no files of site T2_NEW to check: run pnfsmon crawl first" in r.stdout
