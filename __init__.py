"""pnfs-monitor: a storage-integrity monitor. One import root for the rooms of the design:
``pnfsmon.crawler`` lists a namespace into ``statuses``, ``pnfsmon.tester`` verifies files
under leases, ``pnfsmon.condor`` runs the workers as HTCondor jobs, ``pnfsmon.web`` renders
the reports, ``pnfsmon.schema`` is the shared core, ``pnfsmon.demo`` the demonstration;
``pnfsmon.cli`` assembles the command."""

import os as _os
from importlib import metadata as _metadata

#: The installed distribution's version; the bundle for HTCondor jobs (a zipapp, without
#: the distribution's metadata) carries the one it was built with in ``BUNDLE_VERSION``.
_FALLBACK = "0+unknown"  # a source tree run without installing it (PYTHONPATH)


def _version() -> str:
    # Only a bundle has the file (read through its zip importer): a worker node's own
    # install must not speak for the bundle.
    try:
        data = __loader__.get_data(_os.path.join(_os.path.dirname(__file__), "BUNDLE_VERSION"))
        return data.decode().strip()
    except (OSError, AttributeError):
        pass
    try:
        return _metadata.version("pnfs-monitor")
    except _metadata.PackageNotFoundError:
        return _FALLBACK


__version__ = _version()
