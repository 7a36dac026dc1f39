"""TLS to the database: a private MariaDB that accepts only encrypted connections
(``require_secure_transport``), with certificates from a CA made for the test. With the CA
(in the URL or the configuration) every command works and the server is verified; a plain
connection, or a server the CA did not sign, is one clear line; what travels on the
loopback carries no SQL text; HTCondor jobs get the CA file and a URL naming it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import htcondor2
import pytest
import sqlalchemy as sa

from pnfsmon.schema import config, db
from pnfsmon.schema.config import Settings
from tests.helpers import SERVERS, create_database_when_up, pnfsmon
from tests.test_faults import PrivateMariaDB, _mysql_ids


def make_ca(where: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA (certificate, key)."""
    cert, key = where / f"{name}.pem", where / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def make_server_cert(where: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 signed by ``ca``."""
    cert, key, csr = where / "server.pem", where / "server.key", where / "server.csr"
    ext = where / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey",
                    str(ca[1]), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class TlsOnlyMariaDB(PrivateMariaDB):
    def __init__(self, base: Path, ca: Path, cert: Path, key: Path) -> None:
        super().__init__(base)
        self.ca, self.cert, self.key = ca, cert, key
        self.url = f"{self.url}?ssl_ca={ca}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", "--user=mysql",
             f"--datadir={self.base / 'data'}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.base / 'sock'}",
             "--innodb-buffer-pool-size=64M",  # grant tables on: they enforce TLS
             f"--ssl-ca={self.ca}", f"--ssl-cert={self.cert}", f"--ssl-key={self.key}",
             "--require-secure-transport=ON", f"--log-error={self.base / 'error.log'}"])
        create_database_when_up(self.url.replace("/pnfsmon?", "/?"), "pnfsmon")


@pytest.fixture(scope="module")
def tls_mariadb():
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/mariadbd"):
        if os.environ.get("CI"):
            pytest.fail("needs root and mariadb-server to run a private MariaDB")
        pytest.skip("needs root and mariadb-server to run a private MariaDB")
    # Not under pytest's base directory: every pytest session on the machine sets that
    # back to mode 700, which would lock the mysql user out mid-test.
    base = Path(tempfile.mkdtemp(prefix="pnfsmon-tls-"))
    certs = base / "certs"
    certs.mkdir()
    ca = make_ca(certs, "pnfsmon-test-ca")
    cert, key = make_server_cert(certs, ca)
    make_ca(certs, "rogue-ca")
    for path in (certs, *certs.iterdir()):
        os.chown(path, *_mysql_ids())
    os.chmod(base, 0o755)
    server = TlsOnlyMariaDB(base / "mariadb", ca[0], cert, key)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def cipher(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").one()[1]


def test_with_the_ca_in_the_url_or_the_configuration_it_works_encrypted(tls_mariadb,
                                                                        tmp_path):
    r = pnfsmon("--db", tls_mariadb.url, "db", "init")
    assert r.returncode == 0, r.stderr
    r = pnfsmon("--db", tls_mariadb.url, "status")
    assert r.returncode == 0, r.stderr
    engine = db.create_engine(Settings(tls_mariadb.url))
    assert cipher(engine)  # an encrypted session
    engine.dispose()
    conf = tmp_path / "pnfsmon.conf"
    conf.write_text(f"[pnfsmon]\ndb = {tls_mariadb.url.split('?')[0]}\n"
                    f"db_ssl_ca = {tls_mariadb.ca}\n")
    r = pnfsmon("status", env={"PNFSMON_CONFIG": str(conf)})
    assert r.returncode == 0, r.stderr
    os.environ["PNFSMON_CONFIG"] = str(conf)
    try:
        engine = db.create_engine(config.load())
    finally:
        del os.environ["PNFSMON_CONFIG"]
    assert cipher(engine)
    engine.dispose()


def test_a_plain_connection_or_a_foreign_server_is_one_clear_line(tls_mariadb):
    plain = tls_mariadb.url.split("?")[0] + "?ssl_disabled=true"
    r = pnfsmon("--db", plain, "status")
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    # MariaDB says only "access denied" to a plain login on a TLS-only server.
    assert "Access denied" in line and "accepts only encrypted connections" in line
    rogue = tls_mariadb.url.replace("pnfsmon-test-ca.pem", "rogue-ca.pem")
    r = pnfsmon("--db", rogue, "status")
    assert r.returncode == 2, r.stderr  # not "unavailable, retry": a retry cannot help
    [line] = r.stderr.strip().splitlines()
    assert "CERTIFICATE_VERIFY_FAILED" in line


class RecordingProxy:
    """Loopback TCP proxy keeping every byte that passes, both ways."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def test_no_sql_text_travels_in_clear(tls_mariadb, server_databases):
    sql = (b"SELECT", b"status_counts")  # what `status` asks, whatever the database holds
    proxy = RecordingProxy(tls_mariadb.port)
    url = tls_mariadb.url.replace(f":{tls_mariadb.port}/", f":{proxy.port}/")
    assert pnfsmon("--db", url, "db", "init").returncode == 0
    assert pnfsmon("--db", url, "status").returncode == 0
    proxy.close()
    seen = bytes(proxy.seen)
    assert len(seen) > 1000  # the commands did talk through it
    assert not [text for text in sql if text in seen]
    # The same commands on a plain connection (the shared server) show it: the capture
    # works.
    if "mariadb" not in server_databases:
        return
    shared = server_databases["mariadb"]
    port = int(SERVERS["mariadb"].rsplit(":", 1)[1].split("/")[0])
    control = RecordingProxy(port)
    plain = shared.replace(f":{port}/", f":{control.port}/") + "?ssl_disabled=true"
    assert pnfsmon("--db", plain, "db", "init").returncode == 0
    # The shared database may hold another test's problem files: 1 is an answer too.
    assert pnfsmon("--db", plain, "status").returncode in (0, 1)
    control.close()
    assert all(text in bytes(control.seen) for text in sql)


def test_jobs_get_the_ca_file_and_a_url_naming_it(tmp_path):
    ca = tmp_path / "site-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    url = f"mysql+pymysql://mon@db.example.org/pn?ssl_ca={ca}"
    out = tmp_path / "jobs"
    r = pnfsmon("condor", "submit", "--jobs", "2", "--write", str(out), "--db", url)
    assert r.returncode == 0, r.stderr
    sub = htcondor2.Submit((out / "pnfsmon-workers.sub").read_text())
    assert str(ca) in sub["transfer_input_files"].split(",")
    assert str(ca) in sub["encrypt_input_files"].split(",")
    assert "ssl_ca=site-ca.pem" in sub["arguments"]  # the node's copy, in its scratch dir
    assert str(tmp_path) not in sub["arguments"]


def test_configured_tls_files_become_the_drivers_parameters():
    mysql = db.with_tls(sa.make_url("mysql+pymysql://mon@h/pn"),
                        {"ca": "/etc/pki/ca.pem", "cert": "/c.pem", "key": "/k.pem"})
    assert dict(mysql.query) == {"ssl_ca": "/etc/pki/ca.pem", "ssl_cert": "/c.pem",
                                 "ssl_key": "/k.pem"}
    pg = db.with_tls(sa.make_url("postgresql+psycopg://mon@h/pn"), {"ca": "/ca.pem"})
    assert dict(pg.query) == {"sslrootcert": "/ca.pem", "sslmode": "verify-full"}
    # What the URL says itself wins over the configuration.
    own = db.with_tls(sa.make_url("mysql+pymysql://mon@h/pn?ssl_ca=/own.pem"),
                      {"ca": "/etc/pki/ca.pem"})
    assert own.query["ssl_ca"] == "/own.pem"
