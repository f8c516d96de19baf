"""The order of a shuffled epoch when the set streams from a store: a permutation of the shards, with the samples
mixed within a window of shards, so that a rank reads from few shards at any time and the cache holds only those.

How (in the spirit of MosaicML Streaming's `py1e`): the shards are put in a random order and their samples laid end
to end in it; each sample's place in that sequence is moved on by a uniform random offset of up to `window` places
(the largest shard's sample count), and the samples are sorted by where they land. A sample therefore lands at most
one window from its shard's place, so the samples being read at any moment come from about two shards, while
neighbouring shards' samples interleave. With the whole split in the cache, an epoch is a full permutation instead
(LoaderPlan.epoch_samples). `randomness` measures an order against the full permutation.
"""
from __future__ import annotations

import numpy as np


def shard_window_order(rng: np.random.Generator, counts: list[int]) -> np.ndarray:
    """Sample numbers (manifest order, shard after shard) in the windowed order of shards of `counts` samples."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    sequence = np.concatenate([np.arange(starts[s], starts[s] + counts[s]) for s in rng.permutation(len(counts))])
    landing = np.arange(len(sequence)) + rng.uniform(0, max(counts), len(sequence))
    return sequence[np.argsort(landing, kind="stable")]


def randomness(order: np.ndarray, counts: list[int]) -> dict[str, float]:
    """How shuffled an order of samples is: the rank correlation of place with manifest order (0 for a random
    order), and how far apart the samples of one shard land, as a share of the split (a third for a full random
    permutation: the mean distance of two random places)."""
    places = np.empty(len(order), np.int64)
    places[order] = np.arange(len(order))
    manifest = np.arange(len(order))
    correlation = float(np.corrcoef(manifest, places)[0, 1])
    shard_of = np.repeat(np.arange(len(counts)), counts)
    spreads = []
    for shard in range(len(counts)):
        mine = np.sort(places[shard_of == shard])
        if len(mine) > 1:  # the mean distance between two of the shard's samples, from the sorted places
            n = len(mine)
            pairs = n * (n - 1) / 2
            spreads.append(float(np.sum(mine * (2 * np.arange(n) - n + 1)) / pairs))
    return {"correlation": round(correlation, 3), "shard_spread": round(float(np.mean(spreads)) / len(order), 4)}
