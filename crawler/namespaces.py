"""Choose a namespace: by ``--namespace posix|pnfs|chimera|chimera-db|xrootd``, or by the root
(``root://host:port//path`` is XRootD, a local directory is POSIX). Each namespace is one
small module with the same two members: ``root`` (the stored name of the crawl root, below
which unseen rows are marked vanished) and ``walk(stats)`` (yields ``Listed`` records)."""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator
from typing import Protocol

from pnfsmon.crawler.chimera import ChimeraNamespace
from pnfsmon.crawler.chimera_db import ChimeraDbNamespace
from pnfsmon.crawler.listing import Listed, WalkStats
from pnfsmon.crawler.pnfs import PnfsNamespace
from pnfsmon.crawler.posix import PosixNamespace
from pnfsmon.crawler.xrootd import XRootDNamespace
from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.paths import display
from pnfsmon.schema.xrootd import is_xrootd_url


class NamespaceKind(str, enum.Enum):
    """The kinds of namespace a crawl lists: a closed vocabulary (``--namespace``, a site's
    ``namespace_kind``)."""

    POSIX = "posix"
    PNFS = "pnfs"
    CHIMERA = "chimera"
    CHIMERA_DB = "chimera-db"
    XROOTD = "xrootd"


NAMESPACES = tuple(k.value for k in NamespaceKind)  # as the command line spells them


class Namespace(Protocol):
    name: str
    root: bytes

    def walk(self, stats: WalkStats) -> Iterator[Listed]: ...


def open_namespace(root: str | bytes, kind: str | None = None, *, read_xattrs: bool = True,
                   checksums: str = "query", timeout: float = 60.0,
                   parallel: int | None = None, chimera_db: str | None = None,
                   chimera_password: str | None = None,
                   chimera_timezone: str | None = None) -> Namespace:
    """The namespace to crawl below ``root``; ConfigError if it cannot be one.
    ``timeout``: seconds one request (XRootD) or call (a mount) may take; ``parallel``:
    calls in flight on a mount (None: by its filesystem, see ``crawler.walk``)."""
    remote = is_xrootd_url(root)
    try:
        kind = NamespaceKind(kind or ("xrootd" if remote else "posix"))
    except ValueError:
        raise ConfigError(f"unknown namespace {kind!r}; known: {', '.join(NAMESPACES)}") \
            from None
    if kind == NamespaceKind.XROOTD:
        if not remote:
            raise ConfigError(f"the xrootd namespace needs a root://host:port//path URL, "
                              f"not {display(os.fsencode(root))}")
        return XRootDNamespace(root, checksums=checksums, timeout=timeout)
    if kind == NamespaceKind.CHIMERA_DB:
        if not chimera_db:
            raise ConfigError("--namespace chimera-db needs the database: --chimera-db "
                              "postgresql://ROLE@HOST/chimera (or chimera_db = in the site's "
                              "section)")
        return ChimeraDbNamespace(os.fsencode(root), chimera_db, password=chimera_password,
                                  timezone=chimera_timezone)
    if remote:
        raise ConfigError(f"{kind.value} namespaces are local mounts; {os.fsdecode(root)} is an "
                          "XRootD URL (use --namespace xrootd)")
    path = os.path.abspath(os.fsencode(root))
    if not os.path.isdir(path):
        raise ConfigError(f"crawl root {display(path)} is not a directory")
    if kind == NamespaceKind.PNFS:
        return PnfsNamespace(path, parallel=parallel, timeout=timeout)
    if kind == NamespaceKind.CHIMERA:
        return ChimeraNamespace(path, parallel=parallel, timeout=timeout)
    return PosixNamespace(path, read_xattrs=read_xattrs, parallel=parallel, timeout=timeout)
