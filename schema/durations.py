"""Units of time, and the periods pnfs-monitor uses by default, defined once: every module
that counts in hours or days, or falls back to the recheck period, takes them from here."""

HOUR = 3600.0
DAY = 86400.0
#: Days between two checks of a file (a site's ``recheck_after``, ``--recheck-after``).
DEFAULT_RECHECK_DAYS = 30.0
DEFAULT_RECHECK = DEFAULT_RECHECK_DAYS * DAY  # the same, in seconds
