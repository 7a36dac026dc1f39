"""One exit-code contract (``schema.errors``), end to end: each code forced from the CLI,
the HTCondor policies evaluated by the bindings' own ClassAd evaluator for each code, the
DAG's POST script run with each code (DAGMan's negative ones too), the cron wrapper and the
systemd units reading the same table."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import classad2
import pytest

import pnfsmon as pnfsmon_package
from pnfsmon.condor import dag as dag_module
from pnfsmon.condor import submit
from pnfsmon.schema.errors import CONTRACT, DONE, HELD, RETRIED
from pnfsmon.schema.sites import Site
from tests.helpers import flip_bit, random_bytes, write_file
from tests.test_condor import read_dag

ROOT = Path(__file__).resolve().parent.parent
OLD_PYTHON = "/root/.pyenv/versions/3.9.18/bin/python3"


def pnfsmon(db_url: str, *args: str, patch: str = "", timeout: float = 120, **environment):
    """``pnfsmon ARGS`` as a command; ``patch``: Python run first (to plant a bug)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env.update(PNFSMON_DB=db_url, **environment)
    code = f"import sys\n{patch}\nfrom pnfsmon.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


BUG = ("import pnfsmon.schema.lease as lease\n"
       "def record(self, verdicts):\n"
       "    raise RuntimeError('planted bug in record')\n"
       "lease.Lease.record = record\n")


def test_each_code_from_the_cli(tmp_path, db_url):
    tree = tmp_path / "storage"
    files = [write_file(tree / f"f{i}", random_bytes(2000 + i, i), record=True)
             for i in range(4)]
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text("[site s]\ngrace = 0\n")  # the files are due at once
    r = pnfsmon(db_url, "status")
    assert r.returncode == 0, r.stderr  # nothing wrong (nothing yet)
    r = pnfsmon(db_url, "crawl", str(tree), "--site", "s", PNFSMON_CONFIG=str(conf))
    assert r.returncode == 0, r.stderr
    # 4: a bug inside a worker process: caught there, the files released, the command
    # exits 4 with one line on stderr, the traceback in the log.
    log = tmp_path / "check.log"
    r = pnfsmon(db_url, "check", "--workers", "1", "--log-file", str(log), patch=BUG)
    assert r.returncode == 4, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "internal error" in last and "planted bug in record" in last
    assert "Traceback" in log.read_text() and "RuntimeError" in log.read_text()
    assert "Traceback" not in r.stderr  # the log is a file here: stderr has the one line
    flip_bit(files[2], 100)
    r = pnfsmon(db_url, "check", "--workers", "1")
    assert r.returncode == 1, r.stderr  # problems found: a complete answer
    assert "corrupted 1" in r.stdout
    r = pnfsmon(db_url, "check", "--workers", "0")
    assert r.returncode == 2 and r.stderr.startswith("pnfsmon: error:")  # usage
    r = pnfsmon(db_url, "crawl", "root://127.0.0.1:1//data", "--site", "x")
    assert r.returncode == 3 and "unreachable" in r.stderr  # transient
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    # 4 in the command's own process (no workers): traceback to the log (stderr here,
    # there being no log file), the last line one line.
    r = pnfsmon(db_url, "status", patch="import pnfsmon.web.cli as w\n"
                "w.summarize = lambda *a, **k: 1 / 0\n")
    assert r.returncode == 4
    assert "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("pnfsmon: internal error")


def test_a_missing_optional_dependency_is_a_configuration_error(tmp_path):
    """A crawl of a Chimera database on an install without the postgresql extra: exit 2,
    the line naming the extra, no traceback."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert pnfsmon(url, "db", "init").returncode == 0
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text("[site T2_C]\nnamespace = /pnfs/example.org/data\n"
                    "chimera_db = postgresql://chimera@127.0.0.1/chimera\n")
    r = pnfsmon(url, "crawl", "/pnfs/example.org/data", "--site", "T2_C", "--namespace",
                "chimera-db", patch="sys.modules['psycopg'] = None  # not installed",
                PNFSMON_CONFIG=str(conf))
    assert r.returncode == 2, r.stderr
    assert "pnfs-monitor[postgresql]" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.skipif(not os.path.exists(OLD_PYTHON), reason="no python 3.9 here")
def test_python_too_old_is_5(tmp_path):
    # The package as the old interpreter would find it installed (an editable install's
    # root is the work tree, whose folder is not named pnfsmon).
    (tmp_path / "pnfsmon").symlink_to(Path(pnfsmon_package.__file__).parent)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([OLD_PYTHON, "-m", "pnfsmon", "status"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 5 and "needs python3 >= 3.10" in r.stderr


def test_nagios_says_unknown_when_it_cannot_tell(tmp_path, db_url):
    for patch, args in [
        ("import pnfsmon.web.cli as w\nw.summarize = lambda *a, **k: 1 / 0\n", []),  # a bug
        ("", ["--db", "mysql+pymysql://root@127.0.0.1:1/x"]),  # database unreachable
        ("", ["--warning", "many"]),  # bad arguments
    ]:
        r = pnfsmon(db_url, "status", "--nagios", *args, patch=patch)
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        assert r.stdout.startswith("PNFSMON UNKNOWN - "), (args, r.stdout)
        assert r.stdout.count("\n") == 1
    r = pnfsmon(db_url, "status", "--nagios")
    assert r.returncode == 0 and r.stdout.startswith("PNFSMON OK")


# -- HTCondor: the bindings' ClassAd evaluator on the written policy, for each code -------

def job_end(policy: dict[str, str], *, code: int | None = None, signal: int | None = None,
            starts: int = 1) -> dict:
    """What the schedd decides when a job ends with exit ``code`` (or killed by ``signal``):
    done, held (with reason and subcode), and whether a later periodic_release lets it go."""
    ad = classad2.ClassAd({"ExitBySignal": signal is not None, "NumJobStarts": starts})
    if signal is not None:
        ad["ExitSignal"] = signal
    else:
        ad["ExitCode"] = code
    for key in ("retry_until", "on_exit_hold", "on_exit_hold_reason", "on_exit_hold_subcode",
                "periodic_release"):
        ad[key] = classad2.ExprTree(policy[key])
    held = ad.eval("on_exit_hold") is True
    out = {"held": held, "done": not held and ad.eval("retry_until") is True}
    if held:
        out["reason"] = ad.eval("on_exit_hold_reason")
        ad["HoldReasonCode"] = submit.HOLD_BY_POLICY
        ad["HoldReasonSubCode"] = ad.eval("on_exit_hold_subcode")
        ad["EnteredCurrentStatus"] = int(time.time()) - submit.RETRY_DELAY - 1
        out["subcode"] = ad["HoldReasonSubCode"]
        out["released"] = ad.eval("periodic_release") is True
        ad["EnteredCurrentStatus"] = int(time.time())
        out["released_at_once"] = ad.eval("periodic_release") is True
    return out


def test_submit_files_apply_the_contract_for_every_code(tmp_path):
    desc = submit.worker_description(tmp_path / "pnfsmon.pyz", "mysql+pymysql://m@db/pn",
                                     tmp_path, None, submit.JobOptions(max_retries=4))
    policy = submit.render(desc)  # as the bindings render the written file
    policy = {k: policy[k] for k in policy}
    for code in DONE:
        assert job_end(policy, code=code) == {"held": False, "done": True}, code
    for code in (*HELD, *RETRIED, 7, 130):
        end = job_end(policy, code=code)
        assert end["held"] and end["subcode"] == code, code
        assert f"exit code {code}" in end["reason"], end
        assert not end["released_at_once"], code  # a retry waits RETRY_DELAY
        assert end["released"] == (code not in HELD), code
        if code in CONTRACT:
            assert CONTRACT[code].meaning.split(":")[0] in end["reason"]
    assert "--python PATH" in job_end(policy, code=5)["reason"]
    killed = job_end(policy, signal=9)  # the OOM killer
    assert killed["held"] and killed["subcode"] == 137 and killed["released"]
    assert "signal 9" in killed["reason"]
    # Bounded: after max_retries starts a 3 or a 4 stays held, with its reason.
    for code in RETRIED:
        assert job_end(policy, code=code, starts=4)["released"]
        assert not job_end(policy, code=code, starts=5)["released"]
    # The crondor crawl: the same table, its nightly starts unbounded.
    crawl = submit.render(submit.crawl_description(
        tmp_path / "x.pyz", "mysql+pymysql://m@db/pn", tmp_path, None, submit.JobOptions(),
        "/pnfs/x", "T2_X", "0 2 * * *"))
    crawl = {k: crawl[k] for k in crawl}
    assert job_end(crawl, code=3, starts=400)["released"]
    assert not job_end(crawl, code=2)["released"] and job_end(crawl, code=1)["done"]


@pytest.fixture
def written_dag(tmp_path):
    inputs = dag_module.DagInputs(
        workdir=tmp_path / "dag", db_url="mysql+pymysql://m@db/pn", password_file=None,
        worker_db_url="mysql+pymysql://w@db/pn", worker_password_file=None, config_file=None,
        local_pnfsmon=[sys.executable, "-m", "pnfsmon"],
        bundle=tmp_path / "dag" / "pnfsmon.pyz", bundled=True, opts=submit.JobOptions(),
        report_dir=tmp_path / "report", log_interval=300)
    plans = [dag_module.SitePlan(Site("T2_A"), True, ["--site", "T2_A"])]
    workflow, report = dag_module.build(plans, inputs, 2)
    dag_module.write(workflow, report, inputs, None)
    return tmp_path / "dag"


# DAGMan's $RETURN: exit codes, -N for death by signal N, -1001 submission failed, -1002
# removed. The POST script's answer: 0 success, 2 failed and not retried (RETRY ...
# UNLESS-EXIT 2), anything else failed and retried.
POST_ANSWERS = {0: 0, 1: 0, 2: 2, 3: 1, 4: 1, 5: 2, 130: 1, -9: 1, -1001: 1, -1002: 2}


def test_the_dag_post_script_succeeds_on_0_and_1_only(written_dag):
    dag = read_dag(written_dag / dag_module.DAG_FILE)
    text = (written_dag / dag_module.DAG_FILE).read_text()
    for node in dag["jobs"]:
        assert f"RETRY {node} {dag_module.NODE_RETRIES} UNLESS-EXIT 2" in text, node
        assert f"SCRIPT PRE {node}" in text, node
    post = dag["post"]["T2_A-crawl:0"]
    for value, answer in POST_ANSWERS.items():
        r = subprocess.run([*post[:-1], str(value)])
        assert r.returncode == answer, value
    assert subprocess.run([*post[:-1], ""]).returncode == 1  # no value: not a success
    # Worker nodes carry no job-level holds: a held node would stop the night.
    worker = (written_dag / "T2_A-check.sub").read_text()
    assert "on_exit_hold" not in worker and "periodic_release" not in worker
    # The PRE script delays retries only.
    pre = [line.split()[3] for line in text.splitlines() if line.startswith("SCRIPT PRE")][0]
    env = {**os.environ, "PNFSMON_RETRY_DELAY": "0"}
    for retry in ("0", "1"):
        assert subprocess.run([pre, retry], env=env).returncode == 0


# -- cron and systemd --------------------------------------------------------------------

@pytest.mark.parametrize("code, runs", [(0, 1), (1, 1), (2, 1), (5, 1), (3, 3), (4, 3)])
def test_the_cron_wrapper_retries_3_and_4_only(tmp_path, code, runs):
    fake = tmp_path / "bin" / "pnfsmon"
    fake.parent.mkdir()
    calls = tmp_path / "calls"
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\nexit {code}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "PNFSMON_RETRY_DELAY": "0",
           "PNFSMON_RETRIES": "2"}
    r = subprocess.run([str(ROOT / "scripts" / "pnfsmon-nightly-crawl"), "/pnfs/x", "T2_X",
                        "--namespace", "pnfs"], env=env, capture_output=True, text=True)
    assert r.returncode == code
    assert calls.read_text().splitlines() == ["crawl /pnfs/x --site T2_X --namespace pnfs"] * runs


@pytest.mark.parametrize(("codes", "calls", "code"), [
    ({}, ["crawl", "check", "report"], 0),
    ({"crawl": 1}, ["crawl", "check", "report"], 1),  # problems found: the cycle goes on
    ({"check": 1}, ["crawl", "check", "report"], 1),
    ({"crawl": 2}, ["crawl"], 2),  # a refused crawl: no check of what may be an empty mount
    ({"check": 3}, ["crawl", "check", "check", "check"], 3),  # retried, then given up
    ({"check": 5}, ["crawl", "check"], 5),
    ({"report": 4}, ["crawl", "check", "report", "report", "report"], 4),
])
def test_the_nightly_cycle_goes_on_after_answers_only(tmp_path, codes, calls, code):
    """scripts/pnfsmon-nightly: crawl, check, report; each step by the contract."""
    fake = tmp_path / "bin" / "pnfsmon"
    fake.parent.mkdir()
    log = tmp_path / "calls"
    cases = "".join(f"    {step}) exit {c} ;;\n" for step, c in codes.items())
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\ncase \"$1\" in\n{cases}esac\nexit 0\n")
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "PNFSMON_RETRY_DELAY": "0",
           "PNFSMON_RETRIES": "2"}
    r = subprocess.run([str(ROOT / "scripts" / "pnfsmon-nightly"), "T2_X", "/srv/www",
                        "--workers", "4"], env=env, capture_output=True, text=True)
    assert r.returncode == code, r.stderr
    made = log.read_text().splitlines()
    assert [c.split()[0] for c in made] == calls
    assert made[0] == "crawl --site T2_X"
    assert all(c == "check --site T2_X --workers 4" for c in made if c.startswith("check"))
    assert all(c == "report /srv/www" for c in made if c.startswith("report"))


def unit(name: str) -> dict[str, str]:
    values = {}
    for line in (ROOT / "scripts" / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


@pytest.mark.parametrize("name", ["pnfsmon-crawl.service", "pnfsmon-check.service",
                                  "pnfsmon-report.service", "pnfsmon-prune.service"])
def test_systemd_units_read_the_same_table(tmp_path, name):
    values = unit(name)
    success = set(values.get("SuccessExitStatus", "").split())
    assert success <= {str(c) for c in DONE}  # never a crash (4) or a transient (3)
    assert values["Restart"] == "on-failure"
    assert set(values["RestartPreventExitStatus"].split()) == {str(c) for c in HELD}
    assert values["PrivateTmp"] == "yes"  # a writable temporary directory of its own
    if shutil.which("systemd-analyze"):  # systemd's own parser accepts the unit
        text = (ROOT / "scripts" / name).read_text()
        copy = tmp_path / name
        copy.write_text(text.replace("/usr/local/bin/pnfsmon", "/bin/true")
                        .replace("User=pnfsmon", "User=root"))
        r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr


def test_a_killed_worker_process_is_transient(tmp_path, db_url):
    """A worker process that dies without a word (the OOM killer) is "worker lost": 3,
    retried later, not a configuration error."""
    tree = tmp_path / "storage"
    for i in range(3):
        write_file(tree / f"f{i}", random_bytes(100 + i, i))
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text("[site s]\ngrace = 0\n")
    assert pnfsmon(db_url, "crawl", str(tree), "--site", "s",
                   PNFSMON_CONFIG=str(conf)).returncode == 0
    oom = ("import os, signal\nimport pnfsmon.tester.pool as t\n"
           "t.run = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n")
    r = pnfsmon(db_url, "check", "--workers", "2", patch=oom)
    assert r.returncode == 3, r.stderr
    assert "worker(s) died" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs root and unshare for a private read-only /tmp")
def test_a_read_only_tmp_is_a_configuration_error(tmp_path, db_url):
    """A crawl under ProtectSystem=strict without PrivateTmp: no temporary directory to
    stage LOAD DATA in. Exit 2 naming the way out, not a traceback."""
    if not db_url.startswith("mysql"):
        pytest.skip("LOAD DATA staging is MariaDB's")
    tree = tmp_path / "storage"
    write_file(tree / "f0", b"zero")
    assert pnfsmon(db_url, "crawl", str(tree), "--site", "s").returncode == 0
    write_file(tree / "f1", b"one")
    read_only = ("mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp && "
                 "mount --bind /var/tmp /var/tmp && mount -o remount,bind,ro /var/tmp && "
                 'cd /proc && exec "$@"')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNFSMON_")}
    env.pop("TMPDIR", None)
    env["PNFSMON_DB"] = db_url
    r = subprocess.run(["unshare", "-m", "sh", "-c", read_only, "sh", sys.executable, "-m",
                        "pnfsmon", "crawl", str(tree), "--site", "s"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "no writable temporary directory" in r.stderr and "PrivateTmp=yes" in r.stderr
    assert "Traceback" not in r.stderr
