"""The shared core of pnfs-monitor: tables, status codes, configuration, the DB connection
and the lease claim that crawler/, tester/, condor/ and web/ all build on."""
