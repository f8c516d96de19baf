"""The sample layer's members: where every sample of a split lies in its shards (read from the DALI index files,
no tar scan), one member's bytes by offset (a pread on disk or in the shard cache; without a cache, from a ranged GET
in a bucket), and a member's pixels (a raw view, or a decode). The torch loader's workers and the DALI pipeline's
feed both read samples in any order through it, and a sample DALI could not decode is found here, read as the torch
loader reads it."""
from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import simplejpeg

from .. import fetching
from ..errors import FastsegError
from ..format import META_EXT, RAW_SIZE_DTYPE
from ..pictures import decode_image, image_region, image_shape, member_pixels
from ..sets import index_samples
from .contract import LoaderPlan
from .windows import region, whole

__all__ = ["SampleTable", "decode_image", "member_pixels"]


class SampleTable:
    """Every sample of a plan's split, in manifest order: where its members lie, their bytes and their pixels."""

    def __init__(self, plan: LoaderPlan):
        self.plan = plan
        # where the shards are read: in the shard cache once fetched there (stream.py), else where the set lives
        shards = plan.manifest.split(plan.split).shards
        reads = [str(plan.cache.path(shard)) for shard in shards] if plan.cache else plan.shards
        self.origin = dict(zip(reads, plan.shards))  # for messages: the shard as the set names it
        self.members = []  # per sample: (shard path, key, {ext: (offset, size)}); the key is in the member names
        for path, index in zip(reads, plan.indexes):
            self.members += [(path, key, spans) for key, spans in index_samples(index)]
        self.read_span = fetching.SpanReader(reads, keep_open=plan.cache is None)
        self._fetched: dict[tuple[str, tuple[int, int]], tuple] = {}  # member -> (Future of a span, its offset)

    def __len__(self) -> int:
        return len(self.members)

    def __getstate__(self) -> dict:  # a worker process gets the table without this process's requests
        return {**self.__dict__, "_fetched": {}}

    def read(self, path: str, span: tuple[int, int]) -> bytes:
        """The bytes of one member, by offset: fetched ahead (fetch), a pread on disk (or in the shard cache), or a
        ranged GET in a store."""
        fetched = self._fetched.get((path, span))
        if fetched is None:
            return self.read_span(path, *span)
        future, start = fetched
        return bytes(memoryview(future.result())[span[0] - start:span[0] - start + span[1]])

    def fetch(self, numbers: list[int], ahead: list[int] = ()) -> None:
        """Read by ranged GETs (a store, no cache): each of samples `numbers` (and `ahead`, the next batch's) by one
        GET spanning its members, which lie next to each other in the tar, all in flight at once and each hedged
        and retried (fetching.py), for read() to hand out as each arrives, in any order. Otherwise nothing (a pread
        needs no fetching). What earlier batches fetched is let go."""
        if not self.plan.ranged:
            return
        fetched = {}
        for number in [*numbers, *ahead]:
            path, _, members = self.members[number]
            spans = list(members.values())
            if (path, spans[0]) in self._fetched:  # in flight already (fetched ahead)
                fetched.update({(path, span): self._fetched[(path, spans[0])] for span in spans})
                continue
            start = min(offset for offset, _ in spans)
            end = max(offset + size for offset, size in spans)
            future = self.read_span.ahead(path, start, end - start)
            fetched.update({(path, span): (future, start) for span in spans})
        self._fetched = fetched

    def shape(self, number: int) -> tuple[int, int]:
        """(rows, columns) of sample `number`'s image and mask, without decoding either: from its size member where
        the set has one, else from its meta member (written by fastseg-shard for every sample)."""
        path, _, members = self.members[number]
        size = self.plan.stored.size
        if size:
            rows, cols = np.frombuffer(self.read(path, members[size]), RAW_SIZE_DTYPE)
            return int(rows), int(cols)
        meta = json.loads(self.meta(number))
        return int(meta["height"]), int(meta["width"])

    def pixels(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `number`'s image (H×W×3) and mask (H×W), uint8, by the set's storage; one that does not decode is a
        FastsegError naming the shard, the sample and the fix."""
        return self.image(number), self.mask(number)

    def image(self, number: int) -> np.ndarray:
        with self._decoding(number) as (read, stored):
            return member_pixels(read(stored.image_in(self.members[number][2])), stored.raw_image and self._size(read),
                                 3)

    def mask(self, number: int) -> np.ndarray:
        with self._decoding(number) as (read, stored):
            return member_pixels(read(stored.mask), stored.raw_mask and self._size(read), 1)

    def image_window(self, number: int, window, out: tuple[int, int], only: bool = True):
        """The pixels of sample `number`'s image that resampling `window` (pixel edges, windows.py) to `out` reads,
        and the windows.Region they are; with `only` False, the whole image at full scale."""
        with self._decoding(number) as (read, stored):
            data, size = read(stored.image_in(self.members[number][2])), stored.raw_image and self._size(read)
            shape = image_shape(data, size)
            box = region(window, shape, out, reducible=simplejpeg.is_jpeg(data) and not size) if only else \
                whole(*shape)
            return image_region(data, size, box), box

    def _size(self, read) -> bytes | None:
        return read(self.plan.stored.size) if self.plan.stored.size else None

    @contextmanager
    def _decoding(self, number: int):
        """(read: a member of sample `number` by name, the set's members): a sample that does not decode is a
        FastsegError naming the shard, the sample and the fix."""
        path, key, members = self.members[number]
        try:
            yield (lambda ext: self.read(path, members[ext])), self.plan.stored
        except FastsegError:
            raise
        except Exception as err:  # Pillow raises several types for corrupt data
            raise FastsegError(f"{self.origin[path]}: sample {key} does not decode ({str(err).split(' <')[0]}); "
                               f"check the set with fastseg-shard --verify {self.plan.root}") from err

    def meta(self, number: int) -> bytes:
        """Sample `number`'s meta member (its key and source files, as JSON bytes)."""
        path, _, members = self.members[number]
        return self.read(path, members[META_EXT])

    def find_undecodable(self, numbers: list[int]) -> tuple[str, str, str] | None:
        """(shard, key, error) of the first of samples `numbers` whose image or mask does not decode (or, raw, does
        not fit its size): a decoder that runs a batch at once (DALI's) does not say which sample failed."""
        stored = self.plan.stored
        for number in numbers:
            shard, key, members = self.members[number]
            for ext, channels, raw in ((stored.image_in(members), 3, stored.raw_image),
                                       (stored.mask, 1, stored.raw_mask)):
                if ext not in members:
                    continue
                try:
                    size = self.read(shard, members[stored.size]) if raw else None
                    member_pixels(self.read(shard, members[ext]), size, channels)
                except Exception as err:  # Pillow raises several types for corrupt data
                    return self.origin[shard], key, f"{key}.{ext}: {str(err).split(' <')[0]}"
        return None
