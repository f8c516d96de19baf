"""Where every sample of a split lies in its shards, read from the DALI index files (no tar scan), and one member's
bytes by offset: a pread on disk, a ranged GET in a bucket. The torch loader's workers and the DALI pipeline's
shuffled feed both read samples in any order through it."""
from __future__ import annotations

import os

from .. import storage
from ..format import parse_index
from .contract import LoaderPlan


class SampleTable:
    def __init__(self, plan: LoaderPlan):
        self.plan = plan
        self.members = []  # per sample: (shard path, key, {ext: (offset, size)}); the key is in the member names
        for path, index in zip(plan.shards, plan.indexes):
            for sample in parse_index(index.read_text(), str(index)):
                key = sample[0][3].partition(".")[0]
                self.members.append((path, key, {ext: (offset, size) for ext, offset, size, _ in sample}))
        self._files = {}
        # the AWS settings of the process that made the loader: workers from a forkserver started earlier would
        # otherwise read with whatever the environment held then
        self.aws = storage.settings() if any(storage.is_remote(p) for p in plan.shards) else {}

    def __len__(self) -> int:
        return len(self.members)

    def read(self, path: str, span: tuple[int, int]) -> bytes:
        """The bytes of one member, by offset: a pread on disk, a ranged GET in a bucket."""
        if storage.is_remote(path):  # one ranged GET per member: only this sample's bytes travel
            storage.use_settings(self.aws)
            return storage.read_range(path, *span)
        if path not in self._files:  # one descriptor per shard per process
            self._files[path] = os.open(path, os.O_RDONLY)
        return os.pread(self._files[path], span[1], span[0])
