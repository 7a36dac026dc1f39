"""pnfs-monitor: a storage-integrity monitor. One import root for the rooms of the design:
``pnfsmon.crawler`` lists a namespace into ``statuses``, ``pnfsmon.tester`` verifies files
under leases, ``pnfsmon.condor`` runs the workers as HTCondor jobs, ``pnfsmon.web`` renders
the reports, ``pnfsmon.schema`` is the shared core, ``pnfsmon.demo`` the demonstration;
``pnfsmon.cli`` assembles the command."""

__version__ = "0.1.0"
