"""The demo's sample tree (odd names, half the files with an XRootD-style recorded
checksum) and the faults it then injects (a flipped bit, a truncation, a deletion), as
silent rot would: mtimes restored."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

from pnfsmon.schema import xrdcks
from pnfsmon.tester.stream import adler32, adler32_hex

FILES = 40


def build(root: Path) -> list[Path]:
    """Write the sample files below ``root``; returns them."""
    rng = random.Random(2006)
    dirs = [root / "data" / "run1", root / "data" / "run2", root / "mc" / "odd names"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    (root / "empty").mkdir(exist_ok=True)
    files = []
    for i in range(FILES):
        name = [f"file{i:03d}.root", f"f {i} <&>.dat", f"tab\t{i}.dat"][i % 3]
        path = dirs[i % len(dirs)] / name
        data = rng.randbytes(rng.randrange(1, 256 * 1024))
        path.write_bytes(data)
        if i % 2 == 0:
            record = xrdcks.encode(adler32_hex(adler32(data)), int(path.stat().st_mtime))
            # Without user xattrs here, the first check becomes the reference instead.
            with contextlib.suppress(OSError):
                os.setxattr(path, xrdcks.XATTR_NAME, record)
        files.append(path)
    return files


def inject_faults(files: list[Path]) -> dict[str, Path]:
    """Flip a bit, delete a file, truncate a file; mtimes restored as silent rot would."""
    flipped, deleted, truncated = files[3], files[7], files[10]
    for path, action in ((flipped, "flip"), (truncated, "truncate")):
        st = path.stat()
        with open(path, "r+b") as fh:
            if action == "flip":
                fh.seek(st.st_size // 2)
                byte = fh.read(1)
                fh.seek(st.st_size // 2)
                fh.write(bytes([byte[0] ^ 0x10]))
            else:
                fh.truncate(st.st_size // 2)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    deleted.unlink()
    return {"corrupted (bit flip)": flipped, "missing": deleted,
            "corrupted (truncated)": truncated}
