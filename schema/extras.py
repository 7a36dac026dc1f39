"""Optional dependencies: the HTCondor bindings (``pnfsmon condor``) and the XRootD client
bindings (``root://`` namespaces and the ``xrootd`` reader) are extras of pnfs-monitor, so
a POSIX-only site without HTCondor installs neither. A command that needs a missing one
stops with one line naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from pnfsmon.schema.errors import ConfigError

#: The extra (``pip install 'pnfs-monitor[EXTRA]'``) that installs each optional module.
EXTRAS = {"htcondor2": "htcondor", "classad2": "htcondor", "XRootD": "xrootd",
          "pyxrootd": "xrootd", "psycopg": "postgresql", "psycopg_binary": "postgresql",
          "rucio": "rucio"}
#: Dependencies every install has; missing, the install is broken.
REQUIRED = {"zlib_ng": "zlib-ng"}


def require(module: str, what: str) -> ModuleType:
    """``module`` imported, or a ConfigError saying which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module.split(".")[0]]
        raise ConfigError(f"{what} needs the {extra} Python bindings, which are not "
                          f"installed: pip install 'pnfs-monitor[{extra}]'") from None


def missing_dependency(err: ImportError) -> ConfigError | None:
    """A configuration error naming what to install, if ``err`` is about an optional (or a
    required but missing) dependency; None for anything else: a bug."""
    name = (err.name or "").split(".")[0]
    if name in EXTRAS:
        return ConfigError(f"{name} is not installed, and this needs it: pip install "
                           f"'pnfs-monitor[{EXTRAS[name]}]'")
    if name in REQUIRED:
        return ConfigError(f"{name} is not installed (a broken install): pip install "
                           f"{REQUIRED[name]}")
    return None
