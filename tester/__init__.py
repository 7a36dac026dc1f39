"""The tester: workers that claim files under a lease, stream each through Adler32 without
writing it anywhere, compare with the reference checksum and record a verdict."""
