"""``python3 -m pnfsmon``: the same as the ``pnfsmon`` command. An interpreter too old for
pnfs-monitor exits 5 (held by HTCondor, see ``pnfsmon.schema.errors``) with one line, before
anything that needs python3 >= 3.10 is imported."""

import sys

if sys.version_info < (3, 10):  # noqa: UP036 (this is the check)
    sys.stderr.write("pnfsmon: error: pnfs-monitor needs python3 >= 3.10, and %s is %d.%d\n"  # noqa: UP031
                     % (sys.executable, sys.version_info[0], sys.version_info[1]))
    sys.exit(5)  # EXIT_OLD_PYTHON in pnfsmon.schema.errors

try:
    from pnfsmon.cli import main
except Exception as err:  # a broken install: a bug (4), never "problems found" (1)
    import traceback

    traceback.print_exc()
    sys.stderr.write(f"pnfsmon: internal error (a broken install): {err!r}\n")
    sys.exit(4)  # EXIT_INTERNAL

sys.exit(main())
