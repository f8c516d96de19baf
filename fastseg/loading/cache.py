"""The shard cache: whole shards of a set in an object store, kept in a local folder that the processes of a machine
share, bounded by a size limit, verified against the manifest before use.

- A shard is kept as `SHA256.tar`, named by the sha256 the manifest records for it, so a later run (or another set
  holding the same shard) reuses it only where the manifest's sha256 matches; it is written as a partial file
  (space reserved first, fetched in parts: fetching.download) and renamed once its size and sha256 are checked,
  so a cached shard is whole or absent. A process checks each cached shard's sha256 once before it first reads it:
  a shard changed in the cache is fetched again, never served.
- One download per shard per machine: a lock per shard (flock on `.locks/SHA256.lock`) is held while it is fetched;
  whoever waited on it finds the shard there.
- Pins: a process that still needs a shard holds a shared flock on it; the limit is kept by evicting the least
  recently used shards that nobody pins, under one lock for the folder (`.locks/cache.lock`), before space is
  reserved for a new one. So the folder never holds more than the limit, and what any process on the machine still
  reads is never evicted.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import atomic, fetching
from ..errors import FastsegError
from ..format import ShardInfo

DEFAULT_SHARE = 0.5  # of the disk's free space (plus what the cache holds already): the default limit
FULL_WAIT = 120.0  # s to wait for another process to let go of shards before a full cache is an error
def human(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


@dataclass
class Pin:
    """A cached shard that this process still needs: an open descriptor holding a shared lock on it."""

    path: Path
    fd: int

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # the lock goes with it
            self.fd = -1


class ShardCache:
    """The shards folder of a cache (`root/shards`) and its limit in bytes (None: DEFAULT_SHARE of the free disk)."""

    def __init__(self, root: Path, limit: int | None = None):
        self.folder = Path(root) / "shards"
        self.locks = self.folder / ".locks"
        try:
            self.locks.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FastsegError(f"{self.folder}: cannot make the shard cache there ({err.strerror}); choose a "
                               "writable folder with --cache DIR") from None
        self.limit = limit if limit is not None else self.default_limit()
        self._verified: set[tuple[str, int, int]] = set()  # (name, inode, mtime) checked by this process

    def default_limit(self) -> int:
        """DEFAULT_SHARE of the space left on the cache's disk, counting what the cache holds as free."""
        return int(DEFAULT_SHARE * (shutil.disk_usage(self.folder).free + self.used()))

    def path(self, shard: ShardInfo) -> Path:
        return self.folder / f"{shard.sha256}.tar"

    def used(self) -> int:
        """Bytes the folder holds: cached shards and the space reserved for those being fetched."""
        return sum(stat.st_size for _, stat in self._files())

    def _files(self) -> list[tuple[os.DirEntry, os.stat_result]]:
        """The folder's files with their stat, those renamed or removed while it is listed left out (a fetch
        elsewhere renames its partial file into place without the folder's lock)."""
        found = []
        for entry in os.scandir(self.folder):
            try:
                if entry.is_file():
                    found.append((entry, entry.stat()))
            except FileNotFoundError:
                pass
        return found

    def acquire(self, url: str, shard: ShardInfo) -> Pin:
        """A pin on the verified local copy of the shard at `url`, fetched first where the cache has none (or a
        damaged one). Blocks while another process fetches the same shard."""
        path = self.path(shard)
        with self._locked(self.locks / f"{shard.sha256}.lock"):
            pin = self._pin(path)
            if pin is not None and self._checked(pin, shard):
                return pin
            if pin is not None:  # changed since it was cached: never served
                pin.close()
                path.unlink(missing_ok=True)
            self._fetch(url, shard, path)
            pin = self._pin(path)
            if pin is None:  # pragma: no cover - only a user deleting files by hand gets here
                raise FastsegError(f"{path}: removed while it was being fetched; run again")
            self._verified.add(self._identity(pin))
            return pin

    def _pin(self, path: Path) -> Pin | None:
        """A shared lock on `path` where it is there (and still the file the lock was taken on)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # evicted between the open and the lock
            os.close(fd)
            return None
        # recently used: the access time alone, since the modification time is part of what was verified
        os.utime(path, ns=(time.time_ns(), os.fstat(fd).st_mtime_ns))
        return Pin(path, fd)

    def _identity(self, pin: Pin) -> tuple[str, int, int]:
        stat = os.fstat(pin.fd)
        return pin.path.name, stat.st_ino, stat.st_mtime_ns

    def _checked(self, pin: Pin, shard: ShardInfo) -> bool:
        """Whether a cached shard has the manifest's size and sha256 (hashed once per process)."""
        if self._identity(pin) in self._verified:
            return True
        if os.fstat(pin.fd).st_size != shard.bytes or _sha256(pin.fd) != shard.sha256:
            return False
        self._verified.add(self._identity(pin))
        return True

    def _fetch(self, url: str, shard: ShardInfo, path: Path) -> None:
        """The shard into a partial file with its space reserved under the limit, checked, then renamed."""
        tmp = atomic.partial_path(path)
        fd = self._reserve(tmp, shard.bytes)
        try:
            fetching.download(url, shard.bytes, fd).result()
            if _sha256(fd) != shard.sha256:
                raise FastsegError(f"{url}: its bytes differ from the manifest's sha256; the set is damaged: re-shard "
                                   f"or restore it (fastseg-shard --verify {url.rpartition('/')[0]})")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)

    def _reserve(self, tmp: Path, size: int) -> int:
        """An open partial file of `size` bytes allocated on disk, once evicting unpinned shards (least recently used
        first) makes room under the limit; waits up to FULL_WAIT for pins elsewhere to go."""
        deadline = time.monotonic() + FULL_WAIT
        while True:
            with self._locked(self.locks / "cache.lock"):
                self._sweep()
                if self._make_room(size):
                    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                    try:
                        os.posix_fallocate(fd, 0, size)
                    except OSError as err:
                        os.close(fd)
                        tmp.unlink(missing_ok=True)
                        raise FastsegError(f"{self.folder}: no space left for a {human(size)} shard ({err.strerror});"
                                           f" lower --cache-limit (now {human(self.limit)}), free space there, or "
                                           "choose another folder with --cache DIR") from None
                    return fd
            if time.monotonic() > deadline:
                raise FastsegError(f"{self.folder}: the shard cache is full ({human(self.used())} of its "
                                   f"{human(self.limit)} limit) with shards that this run or another on this machine "
                                   "still reads; raise --cache-limit")
            time.sleep(0.1)

    def _make_room(self, size: int) -> bool:
        """Evict unpinned shards, least recently used first, until `size` more bytes fit under the limit."""
        used = self.used()
        if used + size <= self.limit:
            return True
        shards = sorted(((entry, stat) for entry, stat in self._files() if entry.name.endswith(".tar")),
                        key=lambda found: found[1].st_atime_ns)
        for entry, _ in shards:
            if self._evict(Path(entry.path)) and self.used() + size <= self.limit:
                return True
        return False

    def _evict(self, path: Path) -> bool:
        """Remove a cached shard that no process pins (an exclusive lock is granted only then)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        path.unlink(missing_ok=True)
        os.close(fd)
        return True

    def _sweep(self) -> None:
        """Partial files of processes that are gone (killed mid-fetch): their space is free again."""
        for entry in os.scandir(self.folder):
            found = re.match(r"\..+\.partial-(\d+)$", entry.name)
            if found and not atomic.writer_alive(int(found.group(1))):
                Path(entry.path).unlink(missing_ok=True)

    @contextmanager
    def _locked(self, path: Path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _sha256(fd: int, chunk: int = 4 << 20) -> str:
    digest, offset = hashlib.sha256(), 0
    while data := os.pread(fd, chunk, offset):
        digest.update(data)
        offset += len(data)
    return digest.hexdigest()
