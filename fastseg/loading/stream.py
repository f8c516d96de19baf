"""Shards streamed ahead of the samples that need them: for a set in an object store, the loader's process walks its
epoch's order (LoaderPlan.padded_samples), fetches whole shards into the machine's shard cache (cache.py) in the
order the batches first need them, as far ahead as the cache's limit allows, and lets go of each one once the
batches that read it have been read. Both backends call `ready(epoch, batch)` before batch `batch` is read: it
returns once every shard the batch reads is local, verified and pinned (most often at once: fetched while the
batches before it were decoded). Workers then read members from the local files by pread.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from threading import Lock

import numpy as np

from ..errors import FastsegError
from ..processes import note_native_threads
from .cache import ShardCache, human
from .contract import LoaderPlan

AHEAD = 4  # shards fetched ahead of the one being read, at most (and as the limit allows)


class ShardStream:
    """One loader's shards from a store, fetched ahead along its epochs' order. `lag`: batches handed out but maybe
    not read yet (a DataLoader's workers read the batches its main process dispatched ahead), whose shards stay
    pinned."""

    def __init__(self, plan: LoaderPlan, cache: ShardCache, lag: int = 0):
        self.plan, self.cache, self.lag = plan, cache, lag
        self.infos = plan.manifest.split(plan.split).shards
        self.shard_of = np.repeat(np.arange(len(self.infos)), [s.samples for s in self.infos])
        self._lock = Lock()
        self._pool = None  # the fetching threads, made on first use (a worker process never makes one)
        self._jobs: dict[int, Future] = {}  # shard -> Future[Pin]: fetched, being fetched, or waiting
        self._epoch = None
        self._start(0)  # the first epoch's order: a limit too small for it fails here, when the loader is made

    def epoch_shards(self, epoch: int) -> tuple[list[np.ndarray], dict[int, int], dict[int, int]]:
        """The shards each batch of `epoch` reads, and each shard's first and last batch."""
        size = self.plan.batch_size
        order = np.array(self.plan.padded_samples(epoch))
        batches = [np.unique(self.shard_of[order[b * size:(b + 1) * size]]) for b in range(self.plan.batches)]
        first, last = {}, {}
        for b, shards in enumerate(batches):
            for shard in shards.tolist():
                first.setdefault(shard, b)
                last[shard] = b
        return batches, first, last

    def check_limit(self, epoch: int, first: dict[int, int], last: dict[int, int]) -> None:
        """That the cache's limit holds the shards the epoch's order needs at once (each from its first batch to
        its last, and the batches handed out ahead); else the error naming the least limit that does."""
        live = np.zeros(self.plan.batches + self.lag + 2, np.int64)  # bytes pinned at each batch, as a sweep
        for shard, start in first.items():
            live[start] += self.infos[shard].bytes
            live[last[shard] + self.lag + 1] -= self.infos[shard].bytes
        live = np.cumsum(live)
        at = int(np.argmax(live))
        peak = int(live[at])
        if peak > self.cache.limit:
            largest = max(s.bytes for s in self.infos)
            raise FastsegError(f"--cache-limit {human(self.cache.limit)} is below what reading the {self.plan.split} "
                               f"split needs at once: {human(peak)} (the shards batch {at} of epoch {epoch} reads; "
                               f"the largest shard is {human(largest)}); give --cache-limit {human(peak)} or more")

    def ready(self, epoch: int, batch: int) -> None:
        """Return once every shard batch `batch` of `epoch` reads is in the cache and pinned; fetch ahead."""
        for job in self.prepare(epoch, batch):
            job.result()  # a fetch that failed raises its one line here

    def prepare(self, epoch: int, batch: int) -> list[Future]:
        """Start fetching what batch `batch` of `epoch` and the batches after it read (as the limit allows), let go
        of what the batches before it read; the fetches of the shards that batch reads. A loader calls it when it
        is made, so that the first shards are on their way while the model is built."""
        with self._lock:
            if epoch != self._epoch:
                self._start(epoch)
            for shard in [s for s in self._jobs if self._last[s] + self.lag < batch]:
                self._let_go(shard)
            self._schedule(batch)
            return [self._jobs[s] for s in self._batches[batch].tolist()]

    def _start(self, epoch: int) -> None:
        self._batches, self._first, self._last = self.epoch_shards(epoch)
        self.check_limit(epoch, self._first, self._last)
        for shard in [s for s in self._jobs if s not in self._first]:
            self._let_go(shard)
        self._epoch = epoch
        self._queue = sorted(self._first, key=self._first.get)  # in the order the batches first need them

    def _schedule(self, batch: int) -> None:
        """Start fetching the shards the next batches need: every shard up to `batch`'s, then up to AHEAD more,
        while the shards this loader holds fit the limit."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(AHEAD + 1, thread_name_prefix="fastseg-cache")
            note_native_threads()  # a forked worker would inherit the pins' descriptors and this pool's locks
        held = sum(self.infos[s].bytes for s in self._jobs)
        ahead = sum(self._first.get(s, 0) > batch for s in self._jobs)
        while self._queue:
            shard = self._queue[0]
            needed_now = self._first[shard] <= batch
            if shard in self._jobs:
                self._queue.pop(0)
                continue
            if not needed_now and (ahead >= AHEAD or held + self.infos[shard].bytes > self.cache.limit):
                break
            self._queue.pop(0)
            held += self.infos[shard].bytes
            ahead += not needed_now
            self._jobs[shard] = self._pool.submit(self.cache.acquire, self.plan.shards[shard], self.infos[shard])

    def _let_go(self, shard: int) -> None:
        job = self._jobs.pop(shard)
        job.add_done_callback(lambda done: done.exception() is None and done.result().close())
