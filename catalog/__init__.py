"""The catalog room: an experiment's replica dump (Rucio, PhEDEx) loaded as an inventory,
compared with the last complete crawl into missing, orphan and mismatch lists, and the
``pnfsmon catalog`` commands. Reads ``statuses`` and ``crawls``; writes only its own tables."""
