"""What the crawler's XRootD namespace and the tester's XRootD reader share: how a file is
named (``root://host:port//path``, stored whole in ``statuses.path`` so a worker knows where
to read it), the client's timeout settings, the one mapping from a client status to an
exception (gone, refused, or the server unreachable), and how a checksum query's answer is
read: a value, none kept, or an error worth asking again.

The client is imported lazily: a site that never touches XRootD needs no ``xrootd`` wheel."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from pnfsmon.schema.errors import ConfigError, StorageUnavailable
from pnfsmon.schema.extras import require

SCHEMES = ("root://", "roots://", "xroot://", "xroots://")

# Server error numbers (XProtocol.hh): the file or directory is not there / not allowed.
NOT_FOUND = 3011
_NOT_AUTHORIZED = 3010
UNSUPPORTED = 3013  # kXR_Unsupported: to a checksum query, the server keeps no checksums


def is_xrootd_url(path: bytes | str) -> bool:
    text = path.decode("latin-1") if isinstance(path, bytes) else path
    return text.startswith(SCHEMES)


@dataclass(frozen=True)
class XRootDUrl:
    server: str  # "root://host:port"
    path: str  # absolute path on the server, "/store/..."

    @classmethod
    def parse(cls, url: bytes | str) -> XRootDUrl:
        text = os.fsdecode(url)
        scheme, sep, rest = text.partition("://")
        host, slash, path = rest.partition("/")
        if not sep or not host or not slash or f"{scheme}://" not in SCHEMES:
            raise ConfigError(f"not an XRootD URL: {text!r} (expected root://host:port//path)")
        return cls(f"{scheme}://{host}", "/" + path.lstrip("/"))

    def child(self, path: str) -> bytes:
        """The stored name of ``path`` on this server (bytes, any name round-trips)."""
        return os.fsencode(f"{self.server}/{path}")

    def __str__(self) -> str:
        return f"{self.server}/{self.path}"


_configured = False
# Timeouts that fire when asked: by default the client checks them only every 15 s, and
# retries a refused connection for minutes. Environment variables the operator set win.
CLIENT_SETTINGS = {"TimeoutResolution": 1, "ConnectionRetry": 1, "RequestTimeout": 300,
                   "StreamErrorWindow": 5}


def client_environment() -> dict[str, str]:
    """The environment for an XRootD client program (``xrdcp``): ours, with our settings
    where the operator set none."""
    env = dict(os.environ)
    for name, value in CLIENT_SETTINGS.items():
        env.setdefault(f"XRD_{name.upper()}", str(value))
    return env


def client():
    """The ``XRootD.client`` module, configured with ``CLIENT_SETTINGS``."""
    global _configured
    xrd_client = require("XRootD.client", "reading root:// URLs")
    if not _configured:
        for name, value in CLIENT_SETTINGS.items():
            if f"XRD_{name.upper()}" not in os.environ:
                xrd_client.EnvPutInt(name, value)
        _configured = True
    return xrd_client


def raise_for(status, what: str, *, transient: bool = True) -> None:
    """Raise for a failed client status: FileNotFoundError or PermissionError when the
    server answered so; when no server answered (refused, timed out, connection lost)
    StorageUnavailable, or with ``transient=False`` (a read already under way) an OSError;
    OSError for anything else the server said."""
    if status.ok:
        return
    message = " ".join(str(status.message).replace("[ERROR]", "").split())
    if status.errno == NOT_FOUND:
        raise FileNotFoundError(errno.ENOENT, message, what)
    if status.errno == _NOT_AUTHORIZED:
        raise PermissionError(errno.EACCES, message, what)
    if not status.errno:
        # The client's own error: the server could not be reached or did not answer.
        if not transient:
            raise OSError(errno.EIO, message, what)
        raise StorageUnavailable(f"XRootD server for {what} unreachable: {message}")
    raise OSError(errno.EIO, message, what)


def parse_checksum_response(response: bytes | None) -> str | None:
    """``b'adler32 bb920cf5\\x00'`` → ``'bb920cf5'``; None for another algorithm."""
    if not response:
        return None
    fields = response.rstrip(b"\0").decode("ascii", "replace").split()
    if len(fields) != 2 or fields[0].lower() != "adler32":
        return None
    value = fields[1].lower()
    if len(value) > 8 or any(ch not in "0123456789abcdef" for ch in value):
        return None
    return value.rjust(8, "0")


def checksum_failure(errno_: int, message: str) -> tuple[bool, str]:
    """A failed checksum query, as (worth asking again, why). Gone and not allowed are
    answers; anything else is the server or the way to it failing for now: no answer in
    time (``Operation expired``, also what a ``kXR_wait`` longer than the timeout ends
    in), a dropped connection, the server busy or failing to compute it."""
    why = " ".join(str(message).replace("[ERROR]", "").split()) or f"error {errno_}"
    return errno_ not in (NOT_FOUND, _NOT_AUTHORIZED), why
