"""The crawler: enumerate a namespace below a start path into ``statuses`` (path, size, mtime,
the checksum the storage records, site, pool), so the tester knows what to verify."""
