"""pnfs-monitor: a storage-integrity monitor. One import root for the rooms of the design:
``pnfsmon.crawler`` lists a namespace into ``statuses``, ``pnfsmon.tester`` verifies files
under leases, ``pnfsmon.condor`` runs the workers as HTCondor jobs, ``pnfsmon.web`` renders
the reports, ``pnfsmon.schema`` is the shared core, ``pnfsmon.demo`` the demonstration;
``pnfsmon.cli`` assembles the command."""

from importlib import metadata as _metadata

#: The installed distribution's version; the bundle for HTCondor jobs (a zipapp, without
#: the distribution's metadata) carries the one it was built with in ``BUNDLE_VERSION``.
_FALLBACK = "0.1.0"  # a source tree run without installing (PYTHONPATH): setup.cfg's


def _version() -> str:
    try:
        return _metadata.version("pnfs-monitor")
    except _metadata.PackageNotFoundError:
        pass
    from importlib import resources

    try:
        return resources.files(__name__).joinpath("BUNDLE_VERSION").read_text().strip()
    except (FileNotFoundError, OSError):
        return _FALLBACK


__version__ = _version()
