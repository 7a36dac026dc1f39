"""A dCache namespace mount, emulated for real over FUSE (``fuse3`` and ``mfusepy``), for
tests and benchmarks: it serves a backing directory's tree read-only, with dCache's
dot-commands, which open by name but are never listed by ``readdir``, as on a real
``/pnfs`` or NFS 4.1 mount:

- ``.(use)(2)(NAME)``: layer 2 (statistics, ``c=1:ADLER32;l=SIZE;h=no;`` flags, pools);
- ``.(get)(NAME)(checksums)``: ``ADLER32:value``; ``.(get)(NAME)(locality)``: ``ONLINE``;
- ``.(id)(NAME)``: a 36-digit pnfsid.

Every answer is computed from the file (its true Adler32) unless ``overrides`` says
otherwise for that file (a wrong checksum, NEARLINE, malformed text, or None: that
dot-command does not exist). A file in ``writing`` is still being written: dCache records
no checksum for it yet (empty checksums, a layer 2 without ``c=`` and without pools).
Getting the attributes of a directory in ``unstatable`` (and of anything below it) fails
with EIO.

The namespace changes between mounts the way dCache changes it (``Changes``, on the
backing tree): creating, deleting or renaming an entry moves its directory's mtime,
completing a file that was being written (its size grows, its checksum appears) does not.

Every call waits ``delay`` seconds, as a round trip to
dCache's PnfsManager would, and calls are served concurrently (libfuse's threads). The
server counts calls and the most in flight at once, in shared memory, so tests assert
concurrency without timing anything. Listing the directory ``hang`` (or each of a tuple
of them) and every call below it never return: a hung part of a mount.

Mounted by a forked server process with ``attr_timeout=0, entry_timeout=0`` (every lookup
and getattr reaches the server, as with NFS and ``actimeo=0``); always unmounted by
``stop()`` (lazily, then the server is killed), also from the context manager and at exit."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import hashlib
import multiprocessing
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import zlib
from pathlib import Path

FUSERMOUNT = shutil.which("fusermount3") or "/usr/bin/fusermount3"
_MAGIC = re.compile(rb"^\.\((use)\)\(2\)\((.+)\)$|^\.\((get)\)\((.+)\)\((checksums|checksum|"
                    rb"locality)\)$|^\.\((id)\)\((.+)\)$", re.DOTALL)
_LIVE: set[DcacheMount] = set()


def available() -> str | None:
    """None if a FUSE mount can be made here, else why not."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not os.path.exists(FUSERMOUNT):
        return "fuse3 is not installed (.ci/run installs it)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as err:
        return f"mfusepy cannot be loaded: {err}"
    return None


def layer2(data_adler32: str, size: int, pools: str = "pool_emulated_1") -> bytes:
    return (f"2,0,0,0.0,0.0\n:c=1:{data_adler32};l={size};h=no;al=ONLINE;rp=REPLICA;\n"
            f"{pools}\n").encode()


class _Operations:
    use_ns = True

    def __init__(self, backing: bytes, delay: float, overrides: dict,
                 hang: bytes | tuple[bytes, ...] | None, counters,
                 writing: frozenset = frozenset(), unstatable: tuple = ()) -> None:
        self.backing = backing
        self.delay = delay
        self.overrides = overrides
        self.hang = hang
        self.writing = writing
        self.unstatable = unstatable
        self.calls, self.in_flight, self.max_in_flight = counters
        self._mutex = threading.Lock()  # (not `lock`: that is a FUSE operation)
        self.checksums: dict[bytes, str] = {}

    # -- bookkeeping -------------------------------------------------------------------

    def _enter(self, path: str, listing: bool = False) -> bytes:
        with self._mutex:
            self.calls.value += 1
            self.in_flight.value += 1
            self.max_in_flight.value = max(self.max_in_flight.value, self.in_flight.value)
        rel = os.fsencode(path).lstrip(b"/")
        # Listing the hung directory, or any call on what is in it, never answers (the
        # directory's own attributes do: its parent's listing asks for them).
        hung = (self.hang,) if isinstance(self.hang, bytes) else self.hang or ()
        if any((listing and rel == h) or rel.startswith(h + b"/") for h in hung):
            threading.Event().wait()
        if self.delay:
            time.sleep(self.delay)
        return rel

    def _leave(self) -> None:
        with self._mutex:
            self.in_flight.value -= 1

    def _call(self, path: str, work, listing: bool = False):
        rel = self._enter(path, listing)
        try:
            return work(rel)
        finally:
            self._leave()

    # -- the namespace -----------------------------------------------------------------

    def _magic(self, rel: bytes) -> bytes | None:
        """The content of a dot-command, or None if ``rel`` is not one."""
        directory, name = os.path.split(rel)
        match = _MAGIC.match(name)
        if match is None:
            return None
        target = match.group(2) or match.group(4) or match.group(7)
        if match.group(1):
            what = "layer2"
        elif match.group(6):
            what = "id"
        else:  # .(get)(NAME)(checksum) and (checksums) are the same
            what = "locality" if match.group(5) == b"locality" else "checksums"
        file_rel = os.path.join(directory, target)
        full = os.path.join(self.backing, file_rel)
        try:
            st = os.lstat(full)
        except OSError:
            raise OSError(errno.ENOENT, "no such file") from None
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.ENOENT, "not a file")
        override = self.overrides.get(file_rel, {})
        if what in override:
            if override[what] is None:
                raise OSError(errno.ENOENT, "no such dot-command")
            return override[what]
        if what == "id":
            return hashlib.sha256(file_rel).hexdigest()[:36].upper().encode()
        if what == "locality":
            return b"ONLINE\n"
        if file_rel in self.writing:  # no checksum recorded before the upload completes
            return (b"" if what == "checksums"
                    else f"2,0,0,0.0,0.0\n:h=no;l={st.st_size};\n".encode())
        adler = self._adler32(file_rel, full)
        if what == "checksums":
            return f"ADLER32:{adler}\n".encode()
        return layer2(adler, st.st_size)

    def _adler32(self, rel: bytes, full: bytes) -> str:
        if rel not in self.checksums:
            value = 1
            with open(full, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    value = zlib.adler32(chunk, value)
            self.checksums[rel] = f"{value & 0xFFFFFFFF:08x}"
        return self.checksums[rel]

    @staticmethod
    def _attrs(st: os.stat_result) -> dict:
        return {"st_mode": st.st_mode, "st_size": st.st_size, "st_nlink": st.st_nlink,
                "st_uid": st.st_uid, "st_gid": st.st_gid, "st_mtime": st.st_mtime_ns,
                "st_atime": st.st_atime_ns, "st_ctime": st.st_ctime_ns}

    def getattr(self, path: str, fh=None) -> dict:
        def work(rel: bytes) -> dict:
            magic = self._magic(rel)
            if magic is not None:
                now = time.time_ns()
                return {"st_mode": stat.S_IFREG | 0o444, "st_size": len(magic),
                        "st_nlink": 1, "st_mtime": now, "st_atime": now, "st_ctime": now}
            if any(rel == u or rel.startswith(u + b"/") for u in self.unstatable):
                raise OSError(errno.EIO, "input/output error")
            return self._attrs(os.lstat(os.path.join(self.backing, rel)))
        return self._call(path, work)

    def readdir(self, path: str, fh) -> list[str]:
        def work(rel: bytes) -> list[str]:
            return [".", "..", *(os.fsdecode(n) for n in
                                 os.listdir(os.path.join(self.backing, rel)))]
        return self._call(path, work, listing=True)

    def readlink(self, path: str) -> str:
        return self._call(path, lambda rel: os.fsdecode(
            os.readlink(os.path.join(self.backing, rel))))

    def open(self, path: str, flags: int) -> int:
        def work(rel: bytes) -> int:
            if self._magic(rel) is not None:
                return 0
            return os.open(os.path.join(self.backing, rel), os.O_RDONLY)
        return self._call(path, work)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        def work(rel: bytes) -> bytes:
            if fh == 0:
                return (self._magic(rel) or b"")[offset:offset + size]
            return os.pread(fh, size, offset)
        return self._call(path, work)

    def release(self, path: str, fh: int) -> int:
        if fh:
            os.close(fh)
        return 0

    def getxattr(self, path: str, name: str, position=0):
        def work(rel: bytes):
            raise OSError(errno.ENODATA, "no such attribute")
        return self._call(path, work)

    def listxattr(self, path: str) -> list[str]:
        return []

    def statfs(self, path: str) -> dict:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 0,
                "f_bavail": 0, "f_files": 1 << 20, "f_ffree": 0, "f_namemax": 255}


def _serve(backing: bytes, mountpoint: str, delay: float, overrides: dict,
           hang, counters, writing: frozenset, unstatable: tuple) -> None:
    import mfusepy

    mfusepy.FUSE(_Operations(backing, delay, overrides, hang, counters, writing, unstatable),
                 mountpoint,
                 foreground=True, ro=True, attr_timeout=0, entry_timeout=0,
                 negative_timeout=0, max_threads=256, max_idle_threads=64,
                 fsname="pnfsmon-dcache-emulator")


class DcacheMount:
    """``with DcacheMount(backing, mountpoint, delay=0.001) as mount:`` ... the tree is at
    ``mount.root``; ``mount.calls`` and ``mount.max_in_flight`` say what it served."""

    def __init__(self, backing: Path, mountpoint: Path, *, delay: float = 0.0,
                 overrides: dict[bytes, dict] | None = None,
                 hang: bytes | tuple[bytes, ...] | None = None,
                 writing: set[bytes] | frozenset = frozenset(),
                 unstatable: tuple[bytes, ...] = ()) -> None:
        self.backing = os.fsencode(backing)
        self.root = Path(mountpoint)
        self.delay = delay
        self.overrides = overrides or {}
        self.hang = hang
        ctx = multiprocessing.get_context("fork")
        self._counters = (ctx.Value(ctypes.c_longlong, 0, lock=False),
                          ctx.Value(ctypes.c_longlong, 0, lock=False),
                          ctx.Value(ctypes.c_longlong, 0, lock=False))
        self._process = ctx.Process(
            target=_serve, args=(self.backing, str(self.root), delay, self.overrides, hang,
                                 self._counters, frozenset(writing), tuple(unstatable)),
            daemon=True)

    @property
    def calls(self) -> int:
        return self._counters[0].value

    @property
    def max_in_flight(self) -> int:
        return self._counters[2].value

    def reset_counts(self) -> None:
        self._counters[0].value = 0
        self._counters[2].value = self._counters[1].value

    def start(self) -> DcacheMount:
        self.root.mkdir(parents=True, exist_ok=True)
        self._process.start()
        _LIVE.add(self)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.root):
            if not self._process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the dCache emulator did not mount {self.root}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Unmount (lazily: a hung call must not keep the mount) and end the server."""
        _LIVE.discard(self)
        if os.path.ismount(self.root):
            subprocess.run([FUSERMOUNT, "-u", "-z", str(self.root)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self._process.is_alive():
            self._process.kill()
        with contextlib.suppress(AssertionError):
            self._process.join(5)

    def __enter__(self) -> DcacheMount:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Changes:
    """Change a backing tree between mounts as dCache changes its namespace: an entry
    created, deleted or renamed moves its directory's mtime (Chimera's
    ``createInodeInParent`` and ``decNlinkForDir``), to a time strictly after the one it
    had (a coarse clock must not hide a change); a file completed after its upload began
    keeps its directory's mtime. Paths are relative to the backing tree (bytes).
    ``writing``: the files still being written, for the next ``DcacheMount(writing=...)``."""

    def __init__(self, backing: Path | bytes) -> None:
        self.backing = os.fsencode(backing)
        self.writing: set[bytes] = set()

    def _full(self, rel: bytes) -> bytes:
        return os.path.join(self.backing, rel)

    def _moved(self, directory: bytes) -> None:
        st = os.stat(directory)
        os.utime(directory, ns=(st.st_atime_ns, max(time.time_ns(), st.st_mtime_ns + 1000)))

    def add(self, rel: bytes, data: bytes) -> None:
        full = self._full(rel)
        parent = os.path.dirname(full)
        if not os.path.isdir(parent):
            self.mkdir(os.path.dirname(rel))
        with open(full, "wb") as fh:
            fh.write(data)
        self._moved(parent)

    def mkdir(self, rel: bytes) -> None:
        full = self._full(rel)
        parent = os.path.dirname(full)
        if not os.path.isdir(parent):
            self.mkdir(os.path.dirname(rel))
        os.mkdir(full)
        self._moved(parent)

    def delete(self, rel: bytes) -> None:
        full = self._full(rel)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)
        self.writing = {w for w in self.writing if w != rel and not w.startswith(rel + b"/")}
        self._moved(os.path.dirname(full))

    def rename(self, old: bytes, new: bytes) -> None:
        os.rename(self._full(old), self._full(new))
        self.writing = {new + w[len(old):] if w == old or w.startswith(old + b"/") else w
                        for w in self.writing}
        self._moved(os.path.dirname(self._full(old)))
        self._moved(os.path.dirname(self._full(new)))

    def start_writing(self, rel: bytes, partial: bytes) -> None:
        """An upload begins: the entry exists with what has arrived, no checksum yet."""
        self.add(rel, partial)
        self.writing.add(rel)

    def complete(self, rel: bytes, data: bytes) -> None:
        """The upload ends: the file's size and mtime move, its checksum appears; its
        directory's mtime does not move."""
        full = self._full(rel)
        parent = os.stat(os.path.dirname(full))
        st = os.stat(full)
        with open(full, "r+b") as fh:
            fh.write(data)
            fh.truncate(len(data))
        os.utime(full, ns=(st.st_atime_ns, max(time.time_ns(), st.st_mtime_ns + 1000)))
        os.utime(os.path.dirname(full), ns=(parent.st_atime_ns, parent.st_mtime_ns))
        self.writing.discard(rel)


@atexit.register
def _unmount_all() -> None:
    for mount in list(_LIVE):
        mount.stop()
