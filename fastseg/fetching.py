"""Reading byte ranges of objects in a store quickly and surely: every request bounded by a stall timeout, a request
that is late asked for again in parallel (the first answer wins), and a transient failure retried after a backoff
that holds no reading slot.

A bucket is not a disk: a request costs tens of milliseconds before its first byte, and a few in a hundred stall or
fail. A reader that waits for each request in turn pays every stall in full, and a batch waits for its slowest
member. Here requests run on one asyncio loop per process (a daemon thread), through obstore's async API, so any
number of them wait together without a thread each:

- **Hedging** (as in "The Tail at Scale"): a request not answered by the deadline that the latency seen so far sets
  (twice the 95th percentile of the last answers of its kind, at least 50 ms) is sent again beside the first; the
  first complete answer wins and the other is cancelled. obstore has no hedging of its own: it is built here on
  `get_range_async`.
- **Stalls** end at a per-request timeout of about a second (STALL_TIMEOUT, or four times the 95th percentile where
  answers are slower than that), doubled on each new attempt, so a slow link still gets there; the store client's
  own timeout (storage.READ_TIMEOUT) stays the outer bound.
- **Retries**: a transient failure (storage.transient: a reset, a 5xx, throttling, a stall, a body cut short) is
  retried up to READ_ATTEMPTS failures in all, after a jittered backoff during which the slot is free; a missing
  object or a refused access fails at once with one line naming the URL and the fix.

`read_range` is one range, waited for; `download` fetches a whole object in parts (PART_SIZE, several in flight)
into a file, for the loaders' shard cache (loading/cache.py).
"""
from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import deque
from concurrent.futures import Future

from . import storage
from .errors import FastsegError
from .processes import note_native_threads
from .settings import parse_size

STALL_TIMEOUT = float(os.environ.get("FASTSEG_STALL_TIMEOUT", "1.0"))  # seconds a request may go unanswered
READ_ATTEMPTS = 5  # failures of one range before it is given up
PART_SIZE = parse_size(os.environ.get("FASTSEG_PART_SIZE", "8MiB"))  # a shard is fetched in parts of this size
SLOTS = 16  # requests in flight at once, per process
HEDGE_FLOOR = 0.05  # s: a request is never hedged sooner


class Latency:
    """The durations of the last answers of one kind of request (a member, a part), for its deadlines."""

    def __init__(self, keep: int = 64):
        self.seen = deque(maxlen=keep)

    def add(self, seconds: float) -> None:
        self.seen.append(seconds)

    def p95(self) -> float | None:
        if len(self.seen) < 8:
            return None
        ordered = sorted(self.seen)
        return ordered[int(0.95 * (len(ordered) - 1))]

    def hedge_after(self) -> float:
        """When to send a request again beside the first: twice the p95 seen, or the stall timeout until 8 answers."""
        p95 = self.p95()
        return STALL_TIMEOUT if p95 is None else max(HEDGE_FLOOR, 2 * p95)

    def timeout(self, attempt: int) -> float:
        """The stall timeout of the `attempt`th try (1, 2, ...)."""
        p95 = self.p95() or 0.0
        return max(STALL_TIMEOUT, 4 * p95) * 2 ** (attempt - 1)


class Reader:
    """This process's loop of requests, its reading slots and what it has seen of latency (one per process; a
    forked child makes its own)."""

    def __init__(self):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.slots: asyncio.Semaphore | None = None
        self.latency = {"member": Latency(), "part": Latency()}
        self.hedges = 0  # requests sent again because the first was late (for benchmarks and tests)
        thread = threading.Thread(target=self._run, name="fastseg-fetch", daemon=True)
        thread.start()
        note_native_threads()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.slots = asyncio.Semaphore(SLOTS)
        self.loop.run_forever()

    def submit(self, coroutine) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    async def request(self, url: str, offset: int, size: int, kind: str, attempt: int) -> bytes:
        """One GET of `size` bytes at `offset`, bounded by its stall timeout; a short body is a transient failure."""
        started, timeout = time.monotonic(), self.latency[kind].timeout(attempt)
        try:
            data = await asyncio.wait_for(get_range(url, offset, size), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no answer within {timeout:.1f} s") from None
        if len(data) != size:
            raise ConnectionError(f"{len(data)} of {size} bytes arrived")
        self.latency[kind].add(time.monotonic() - started)
        return data

    async def range(self, url: str, offset: int, size: int, kind: str = "member") -> bytes:
        """`size` bytes at `offset` of the object `url`: hedged when late, retried when the failure is transient."""
        failures = []
        while True:
            async with self.slots:  # one reading slot a range; none held while backing off
                data = await self._attempt(url, offset, size, kind, failures)
            if data is not None:
                return data
            if len(failures) >= READ_ATTEMPTS:
                last = failures[-1]
                raise FastsegError(f"{url}: reading {size} bytes at {offset} still failed after {len(failures)} "
                                   f"attempts ({type(last).__name__}: {' '.join(str(last).split())[:200]}); check the "
                                   f"network and the endpoint {storage.endpoint(url)}")
            await pause(0.2 * 2 ** (len(failures) - 1) * random.uniform(0.5, 1.0))

    async def _attempt(self, url: str, offset: int, size: int, kind: str, failures: list) -> bytes | None:
        """One try of a range: the request and, when it is late, the same request beside it (a hedge: it takes no
        slot of its own, hedges being few); the first answer, or None with the transient failures added to
        `failures`. A failure that is not transient is raised at once as one line naming the URL."""
        attempt = len(failures) + 1
        trying = {asyncio.ensure_future(self.request(url, offset, size, kind, attempt))}
        done, _ = await asyncio.wait(trying, timeout=self.latency[kind].hedge_after())
        if not done:
            self.hedges += 1
            trying.add(asyncio.ensure_future(self.request(url, offset, size, kind, attempt)))
        try:
            while trying:
                done, trying = await asyncio.wait(trying, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    err = task.exception()
                    if err is None:
                        return task.result()
                    if not storage.transient(err):
                        with storage.errors(url):
                            raise err
                    failures.append(err)
            return None
        finally:
            for task in trying:
                task.cancel()

    async def into_file(self, url: str, size: int, fd: int, part: int) -> None:
        """The whole object `url` (`size` bytes) written into the open file `fd`, in parts fetched together."""
        async def one(offset: int) -> None:
            data = await self.range(url, offset, min(part, size - offset), "part")
            os.pwrite(fd, memoryview(data), offset)

        tasks = [asyncio.ensure_future(one(offset)) for offset in range(0, size, part)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()


async def pause(seconds: float) -> None:
    """A retry's backoff (tests replace it to see the waits without waiting)."""
    await asyncio.sleep(seconds)


async def get_range(url: str, offset: int, size: int) -> bytes:
    """One ranged GET through obstore (the function tests replace to script a store's answers)."""
    import obstore

    return await obstore.get_range_async(storage.store(url), storage.split_url(url)[2], start=offset, length=size)


_reader: Reader | None = None
_making = threading.Lock()


def reader() -> Reader:
    """This process's Reader, started on first use."""
    global _reader
    with _making:
        if _reader is None or _reader.pid != os.getpid():
            _reader = Reader()
        return _reader


def read_range(url: str, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` of an object, hedged and retried (see the module's docstring)."""
    return bytes(read_range_ahead(url, offset, size).result())


def read_range_ahead(url: str, offset: int, size: int) -> Future:
    """read_range started now and waited for later (Future.result()): many in flight from one thread."""
    return reader().submit(reader().range(url, offset, size))


def download(url: str, size: int, fd: int, part: int = PART_SIZE) -> Future:
    """The object `url` of `size` bytes into the open file `fd`, in parts of `part` bytes fetched together, each
    hedged and retried; done when the Future is."""
    return reader().submit(reader().into_file(url, size, fd, part))


class SpanReader:
    """Reads byte spans of shards, wherever they are: a pread on disk, a ranged GET (read_range) in a store. On disk
    a descriptor is kept per shard, except for the files of the shard cache (`keep_open` False), which may be
    evicted once read: a kept descriptor would keep their space. One per process or thread pool; it carries the
    stores' environment of the process that made it, for workers that a forkserver started earlier."""

    def __init__(self, paths, keep_open: bool = True):
        self._streamed = {path: storage.at(path).streamed for path in paths}  # asked once, not on every read
        self.environment = storage.settings() if any(self._streamed.values()) else {}
        self.keep_open = keep_open
        self._files = {}

    def ahead(self, url: str, offset: int, size: int) -> Future:
        """A ranged GET of an object in a store, started now and waited for later (read_range_ahead)."""
        storage.use_settings(self.environment)
        return read_range_ahead(url, offset, size)

    def __call__(self, path: str, offset: int, size: int) -> bytes:
        if self._streamed.get(path, False):  # a ranged GET: only these bytes travel
            return bytes(self.ahead(path, offset, size).result())
        if not self.keep_open:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise FastsegError(f"{path}: a cached shard was evicted while it was still read; raise "
                                   "--cache-limit") from None
            try:
                return os.pread(fd, size, offset)
            finally:
                os.close(fd)
        if path not in self._files:  # one descriptor per shard per process
            self._files[path] = os.open(path, os.O_RDONLY)
        return os.pread(self._files[path], size, offset)
