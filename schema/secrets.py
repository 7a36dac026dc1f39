"""Keeping the database password out of everything pnfs-monitor writes.

The password may arrive inside the URL (``mysql+pymysql://mon:PW@host/db`` in ``--db``,
``PNFSMON_DB`` or ``db =``), in ``PNFSMON_DB_PASSWORD`` or in a password file. Whatever
the way, the configuration registers it here, and every line that leaves the process as a
message (the CLI's error line, every log record) goes through :func:`scrub`. URLs handed to
other programs (HTCondor job arguments) are built with :func:`without_password`.

A registry of the run's secrets is module state on purpose: the password is a fact of the
whole process, and a line that forgot to scrub must still not print it."""

from __future__ import annotations

import re
import urllib.parse

import sqlalchemy as sa

_SECRETS: set[str] = set()
# user:password@ in a database URL; as in SQLAlchemy's parser, the password ends at the
# first '@' (an '@' inside it must be written %40).
_URL_PASSWORD = re.compile(
    r"((?:mysql|mariadb|postgres|postgresql|sqlite)[\w+]*://[^:/@\s]*:)[^@\s]*@")
MASK = "***"


def register(secret: str | None) -> None:
    """Remember ``secret`` (and the forms it takes inside a URL) for :func:`scrub`."""
    if not secret:
        return
    _SECRETS.update({secret, urllib.parse.quote(secret, safe=""),
                     urllib.parse.quote_plus(secret, safe="")})


def scrub(text: str) -> str:
    """``text`` with every registered secret and every URL password replaced by ***."""
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def without_password(url: sa.URL) -> sa.URL:
    """The same URL with no password at all. (``URL.set(password=None)`` is not that: None
    means "leave it as it is" there.)"""
    return sa.URL.create(url.drivername, username=url.username, password=None,
                         host=url.host, port=url.port, database=url.database,
                         query=url.query)


def redacted_url(text: str) -> str:
    """A database URL as it may be shown: its password as ``***``."""
    try:
        return sa.make_url(text).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return scrub(text)
