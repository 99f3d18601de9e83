"""A FUSE file system that forgets, on a simulated power cut, everything not fsynced.

``PowerFS(mount=..., backing=..., scratch=...)`` mounts a pass-through file system
(mfusepy on libfuse 3, served by a child process ``python -m tests.powerfs``) over
``backing``. While mounted, programs see an ordinary POSIX file system. Separately it
keeps what a disk would hold after a power cut, under strict POSIX durability:

* **File data.** ``fsync``/``fdatasync`` of a file makes its current bytes and size
  durable (all of them: the changed ranges since the last sync are copied to its
  durable copy). Bytes written or truncated since are lost on a cut.
* **Directory entries.** ``fsync`` of a directory makes its current entries (names
  and the files or folders they name) durable: creates, renames, unlinks, links and
  mkdir/rmdir in it since its last fsync are lost on a cut. A rename is durable in
  the new folder and in the old one only once each of them is fsynced.
* A file whose name is durable but whose data was never fsynced comes back empty;
  a file fsynced but whose name never was comes back nowhere. A folder named
  durably but never fsynced itself comes back empty.

``cut_power()`` freezes the file system at once (every later operation fails: the
serving process exits and the kernel reports ENOTCONN to the programs still using
the mount), rewrites ``backing`` as the disk after reboot, and unmounts.
``unmount()`` is a clean shutdown: everything becomes durable first (like ``sync``).

What it does not model, on purpose (keep it simple where the strict model already
suffices): no reordering or partial application of one fsync (a sync is atomic and
complete), no torn or corrupted sectors, no lost data *after* an fsync returned, no
writeback that makes unsynced data durable early (a real disk may keep more than
this model: the model keeps the least POSIX allows). Metadata other than names and
sizes (mode, owner, times) is passed through and treated as always durable. No
symlinks or special files. Locks (flock, fcntl) are the kernel's local locks and
work across processes on this machine, as on a local disk. Shared writable mmap
works (pages reach the file system as writes; SQLite's WAL index uses it).
The live state is itself kept on disk under ``scratch`` (a full copy, so reads need
no merging) and only the bookkeeping of what is unsynced is in memory.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
MOUNT_TIMEOUT_S = 20.0
"""How long a mount may take to appear; libfuse mounts in well under a second."""
POLL_S = 0.05
MAX_RANGES = 64
"""Changed ranges remembered per file before they are merged into one envelope."""

F = TypeVar("F", bound=Callable[..., Any])


def _serialised(method: F) -> F:
    """One operation at a time; after a cut, every operation fails with EIO."""

    @functools.wraps(method)
    def wrapper(self: "PowerLossOps", *args: Any) -> Any:
        with self.mutex:
            if self.dead:
                raise _fuse_error(errno.EIO)
            try:
                return method(self, *args)
            except OSError as exc:
                raise _fuse_error(exc.errno or errno.EIO) from exc

    return wrapper  # type: ignore[return-value]


def _fuse_error(code: int) -> Exception:
    import mfusepy

    return mfusepy.FuseOSError(code)


class PowerLossOps:
    """The operations served by the child process (see the module docstring).

    Live state: a real folder ``scratch/live`` (every operation passes through to it).
    Identity: a number per file or folder, mapped from live paths and kept across
    renames. Durable state: ``durable[dir_id] = {name: id}`` for folders fsynced at
    least once (or present at mount), and ``scratch/store/<id>`` holding the durable
    bytes of each file fsynced at least once (or present at mount).
    """

    use_ns = True

    def __init__(self, *, backing: Path, scratch: Path) -> None:
        self.backing, self.live, self.store = backing, scratch / "live", scratch / "store"
        self.mutex = threading.Lock()
        self.dead = False
        self.next_id = 1
        self.ids: dict[str, int] = {"": 0}
        self.is_dir: dict[int, bool] = {0: True}
        self.durable: dict[int, dict[str, int]] = {}
        self.ranges: dict[int, list[tuple[int, int]]] = {}
        self.fds: dict[int, tuple[int, int]] = {}  # fh -> (live fd, id)
        self._load_backing()

    # --- bookkeeping --------------------------------------------------------------------
    def _load_backing(self) -> None:
        """The backing folder is the disk as it is now: all of it durable."""
        shutil.copytree(self.backing, self.live, symlinks=True)
        self.store.mkdir()
        for folder, dirs, files in os.walk(self.live):
            rel_dir = os.path.relpath(folder, self.live)
            rel_dir = "" if rel_dir == "." else rel_dir
            entries = self.durable.setdefault(self.ids[rel_dir], {})
            for name in dirs + files:
                rel = os.path.join(rel_dir, name)
                ident = entries[name] = self._new_id(rel, is_dir=name in dirs)
                if name in files:
                    shutil.copyfile(self.live / rel, self.store / str(ident))

    def _new_id(self, rel: str, *, is_dir: bool) -> int:
        ident, self.next_id = self.next_id, self.next_id + 1
        self.ids[rel], self.is_dir[ident] = ident, is_dir
        return ident

    def _path(self, path: str) -> Path:
        return self.live / path.lstrip("/")

    def _rel(self, path: str) -> str:
        return path.strip("/")

    def _changed(self, ident: int, start: int, end: int) -> None:
        ranges = self.ranges.setdefault(ident, [])
        ranges.append((start, end))
        if len(ranges) > MAX_RANGES:
            ranges[:] = [(min(r[0] for r in ranges), max(r[1] for r in ranges))]

    def _sync_file(self, ident: int, live_fd: int) -> None:
        """The file's live bytes become its durable bytes (only changed ranges copied)."""
        size = os.fstat(live_fd).st_size
        store_fd = os.open(self.store / str(ident), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            for start, end in self.ranges.pop(ident, []):
                end = min(end, size)
                if start < end:
                    os.pwrite(store_fd, os.pread(live_fd, end - start, start), start)
            os.ftruncate(store_fd, size)
        finally:
            os.close(store_fd)

    def _sync_dir(self, rel: str) -> None:
        """The folder's live entries become its durable entries."""
        prefix = f"{rel}/" if rel else ""
        self.durable[self.ids[rel]] = {
            name: self.ids[prefix + name] for name in os.listdir(self.live / rel)}

    # --- control (called by the child's control thread) ------------------------------------
    def sync_all(self) -> None:
        """A clean shutdown: every file's data and every folder's entries durable."""
        with self.mutex:
            for rel, ident in list(self.ids.items()):
                if self.is_dir[ident]:
                    self._sync_dir(rel)
                else:
                    fd = os.open(self.live / rel, os.O_RDONLY)
                    try:
                        self.ranges[ident] = [(0, os.fstat(fd).st_size)]
                        self._sync_file(ident, fd)
                    finally:
                        os.close(fd)

    def cut_power(self) -> None:
        """Stop serving, then write the durable state into the backing folder."""
        with self.mutex:
            self.dead = True
            for fd, _ in self.fds.values():
                os.close(fd)
            self.fds.clear()
            self._materialise()
            shutil.rmtree(self.live)
            shutil.rmtree(self.store)

    def _materialise(self) -> None:
        for child in list(self.backing.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        placed: dict[int, Path] = {0: self.backing}
        stack = [0]
        while stack:  # each folder is visited once: bounded by the number of ids
            folder = stack.pop()
            for name, ident in sorted(self.durable.get(folder, {}).items()):
                target = placed[folder] / name
                if self.is_dir[ident]:
                    if ident not in placed:  # a folder durable under two names: first wins
                        target.mkdir()
                        placed[ident] = target
                        stack.append(ident)
                elif ident in placed:
                    os.link(placed[ident], target)
                else:
                    source = self.store / str(ident)
                    if source.exists():
                        shutil.copyfile(source, target)
                    else:
                        target.touch()  # named durably, data never synced
                    placed[ident] = target

    # --- FUSE operations -----------------------------------------------------------------
    @_serialised
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.fstat(self.fds[fh][0]) if fh in self.fds else os.lstat(self._path(path))
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
                "st_mtime_ns", "st_ctime_ns", "st_blocks", "st_blksize")
        out = {key: getattr(st, key) for key in keys}
        for key in ("st_atime", "st_mtime", "st_ctime"):
            out[key] = out.pop(f"{key}_ns")
        return out

    @_serialised
    def access(self, path: str, amode: int) -> int:
        if not os.access(self._path(path), amode):
            raise OSError(errno.EACCES, path)
        return 0

    @_serialised
    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._path(path))]

    @_serialised
    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self._sync_dir(self._rel(path))
        return 0

    @_serialised
    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._path(path), mode)
        self._new_id(self._rel(path), is_dir=True)
        return 0

    @_serialised
    def rmdir(self, path: str) -> int:
        os.rmdir(self._path(path))
        del self.ids[self._rel(path)]
        return 0

    @_serialised
    def create(self, path: str, mode: int, flags: int) -> int:
        fd = os.open(self._path(path), _live_flags(flags) | os.O_CREAT, mode)
        rel = self._rel(path)
        ident = self.ids.get(rel) or self._new_id(rel, is_dir=False)
        return self._handle(fd, ident)

    @_serialised
    def open(self, path: str, flags: int) -> int:
        fd = os.open(self._path(path), _live_flags(flags))
        ident = self.ids[self._rel(path)]
        if flags & os.O_TRUNC:
            self._changed(ident, 0, 2**63 - 1)
        return self._handle(fd, ident)

    def _handle(self, fd: int, ident: int) -> int:
        fh = fd  # live fds are unique while open
        self.fds[fh] = (fd, ident)
        return fh

    @_serialised
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(self.fds[fh][0], size, offset)

    @_serialised
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        fd, ident = self.fds[fh]
        written = os.pwrite(fd, data, offset)
        self._changed(ident, offset, offset + written)
        return written

    @_serialised
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if fh in self.fds:
            fd, ident = self.fds[fh]
            os.ftruncate(fd, length)
        else:
            os.truncate(self._path(path), length)
            ident = self.ids[self._rel(path)]
        self._changed(ident, length, 2**63 - 1)  # bytes past length: zero if regrown
        return 0

    @_serialised
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        fd, ident = self.fds[fh]
        self._sync_file(ident, fd)
        return 0

    @_serialised
    def flush(self, path: str, fh: int) -> int:
        return 0

    @_serialised
    def release(self, path: str, fh: int) -> int:
        fd, _ = self.fds.pop(fh)
        os.close(fd)
        return 0

    @_serialised
    def unlink(self, path: str) -> int:
        os.unlink(self._path(path))
        del self.ids[self._rel(path)]
        return 0

    @_serialised
    def rename(self, old: str, new: str) -> int:
        os.rename(self._path(old), self._path(new))
        old_rel, new_rel = self._rel(old), self._rel(new)
        self.ids.pop(new_rel, None)  # a replaced target: its id lives on only if durable
        for rel in [r for r in self.ids if r == old_rel or r.startswith(old_rel + "/")]:
            self.ids[new_rel + rel[len(old_rel):]] = self.ids.pop(rel)
        return 0

    @_serialised
    def link(self, target: str, source: str) -> int:
        os.link(self._path(source), self._path(target))
        self.ids[self._rel(target)] = self.ids[self._rel(source)]
        return 0

    @_serialised
    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._path(path), mode)
        return 0

    @_serialised
    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._path(path), uid, gid)
        return 0

    @_serialised
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._path(path))
        else:
            os.utime(self._path(path), ns=times)
        return 0

    @_serialised
    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.live)
        return {key: getattr(st, key) for key in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
            "f_ffree", "f_favail", "f_flag", "f_namemax")}


def _live_flags(flags: int) -> int:
    """Open flags for the live file: always readable (fsync copies from it), offsets
    come from the kernel (no O_APPEND), creation was decided by the kernel's request."""
    return (flags & ~(os.O_ACCMODE | os.O_APPEND | os.O_CREAT | os.O_EXCL)) | os.O_RDWR


class PowerFS:
    """A mounted power-loss file system (module docstring), served by a child process.

    ``mount``: an empty folder to mount on; ``backing``: the 'disk' (created if
    missing); ``scratch``: an empty folder for the live state. Always call
    ``close()`` (or use as a context manager): it unmounts even after a failure.
    """

    def __init__(self, *, mount: Path, backing: Path, scratch: Path) -> None:
        try:
            import mfusepy  # noqa: F401  (fail here, clearly, when it is not installed)
        except (ImportError, OSError) as exc:  # OSError: mfusepy found no libfuse
            raise RuntimeError(f"FUSE is required: pip install mfusepy (the dev extra) "
                               f"and apt-get install fuse3: {exc}") from exc
        if not Path("/dev/fuse").exists() or not shutil.which("fusermount3"):
            raise RuntimeError("FUSE is required: /dev/fuse and fusermount3 "
                               "(apt-get install fuse3)")
        self.mount, self.backing = mount, backing
        for folder in (mount, backing, scratch):
            folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.powerfs", str(mount), str(backing), str(scratch)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._wait_mounted()

    def _wait_mounted(self) -> None:
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not os.path.ismount(self.mount):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"power-loss FUSE did not mount on {self.mount} "
                                   f"(exit code {self.proc.returncode})")
            time.sleep(POLL_S)

    def _command(self, word: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "done":
            raise RuntimeError(f"power-loss FUSE: {word!r} answered {answer!r}")
        self.proc.wait(MOUNT_TIMEOUT_S)
        self._unmount()

    def cut_power(self) -> None:
        """Lose everything not fsynced, now; ``backing`` is then the disk after reboot."""
        self._command("cut")

    def unmount(self) -> None:
        """Clean shutdown: everything written becomes durable, then unmount."""
        self._command("sync")

    def _unmount(self) -> None:
        # After a cut the mount is still listed but answers ENOTCONN (ismount says no).
        if any(line.split()[1:2] == [str(self.mount)] for line in open("/proc/self/mounts")):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], check=False,
                           capture_output=True, timeout=MOUNT_TIMEOUT_S)

    def close(self) -> None:
        """Unmount and stop the server whatever state they are in (teardown)."""
        try:
            self._unmount()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(MOUNT_TIMEOUT_S)
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> "PowerFS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(mount: Path, backing: Path, scratch: Path) -> None:
    """Child process: serve the mount; 'cut' or 'sync' on stdin ends it."""
    import mfusepy

    ops = PowerLossOps(backing=backing, scratch=scratch)

    def control() -> None:
        word = sys.stdin.readline().strip()  # one command, then this process ends
        try:
            if word == "sync":
                ops.sync_all()
            ops.cut_power()
            print("done", flush=True)
        except BaseException as exc:
            print(f"failed: {exc!r}", flush=True)
        finally:
            os._exit(0)  # closes /dev/fuse: the kernel aborts the connection at once

    threading.Thread(target=control, daemon=True).start()
    mfusepy.FUSE(ops, str(mount), foreground=True, fsname="powerfs", hard_remove=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="power-loss FUSE server (tests only)")
    for name in ("mount", "backing", "scratch"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args()
    _serve(args.mount, args.backing, args.scratch)
