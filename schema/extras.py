"""Optional dependencies: the HTCondor bindings (``pnfsmon condor``) and the XRootD client
bindings (``root://`` namespaces and the ``xrootd`` reader) are extras of pnfs-monitor, so
a POSIX-only site without HTCondor installs neither. A command that needs a missing one
stops with one line naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from pnfsmon.schema.errors import ConfigError

#: The extra (``pip install 'pnfs-monitor[EXTRA]'``) that installs each module's package.
EXTRAS = {"htcondor2": "htcondor", "XRootD": "xrootd", "pyxrootd": "xrootd"}


def require(module: str, what: str) -> ModuleType:
    """``module`` imported, or a ConfigError saying which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module.split(".")[0]]
        raise ConfigError(f"{what} needs the {extra} Python bindings, which are not "
                          f"installed: pip install 'pnfs-monitor[{extra}]'") from None
