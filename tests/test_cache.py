"""The shard cache (loading/cache.py, stream.py) against a real S3-compatible server (moto) behind the counting
proxy of benchmarks/faults.py: each shard fetched once per machine, a changed cached shard fetched again, a limit
below the split kept, resume from the cache, and the windowed order (loading/order.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from fastseg.errors import FastsegError
from fastseg.loading import make_loader
from fastseg.loading.order import randomness, shard_window_order

from .test_s3 import FaultyProxy, KEYS, bucket_set, data, server  # noqa: F401  (the module's moto server and set)

TARS = "/sets/tiny/train-"


@pytest.fixture
def proxy(server):  # noqa: F811
    """Every request to the bucket through a proxy that counts the ranged GETs by object."""
    counting = FaultyProxy(server, share=0.0, seed=0, stall=0.0)
    saved = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = counting.url
    yield counting
    os.environ["AWS_ENDPOINT_URL"] = saved
    counting.close()


def shard_gets(proxy) -> dict[str, int]:
    return {path: count for path, count in proxy.ranged.items() if path.startswith(TARS) and path.endswith(".tar")}


def keys_of(batches) -> list[list[str]]:
    return [b["key"] for b in batches]


def test_two_ranks_on_one_machine_fetch_each_shard_once(bucket_set, proxy, tmp_path):  # noqa: F811
    """Two processes (DDP ranks 0 and 1 of 2) read two epochs at once from one cache: the first epoch's windowed
    slices touch their own shards, the second (a full permutation) all of them; every shard is fetched once."""
    url, _ = bucket_set
    script = (f"from fastseg.loading import make_loader\n"
              f"import sys, json\n"
              f"loader = make_loader({url!r}, backend='torch', batch_size=2, workers=0, rank=int(sys.argv[1]), "
              f"world_size=2, return_keys=True, cache={str(tmp_path)!r})\n"
              f"print(json.dumps([k for _ in range(2) for b in loader for k in b['key'][:b['real']]]))\n")
    env = dict(os.environ, **KEYS, AWS_ENDPOINT_URL=proxy.url)
    ranks = [subprocess.Popen([sys.executable, "-c", script, str(rank)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = [rank.communicate(timeout=240) for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), [err[-2000:] for _, err in outputs]
    keys = [json.loads(out) for out, _ in outputs]
    assert sorted(keys[0][:5] + keys[1][:5]) == [f"s{i:03d}" for i in range(10)]  # disjoint and complete
    assert shard_gets(proxy) == {f"{TARS}{i:06d}.tar": 1 for i in range(4)}
    assert len(list((tmp_path / "shards").glob("*.tar"))) == 4


def test_a_shard_changed_in_the_cache_is_fetched_again_never_served(bucket_set, proxy, tmp_path):  # noqa: F811
    url, _ = bucket_set
    options = dict(backend="torch", batch_size=3, workers=0, return_keys=True, cache=tmp_path, augment="none")
    first = list(make_loader(url, **options))
    assert sum(shard_gets(proxy).values()) == 4
    cached = sorted((tmp_path / "shards").glob("*.tar"))[0]
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed, the size kept
    cached.write_bytes(bytes(data))
    again = list(make_loader(url, **options))
    assert sum(shard_gets(proxy).values()) == 5  # that shard, and only it, fetched again
    assert keys_of(first) == keys_of(again)
    for a, b in zip(first, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert len(list((tmp_path / "shards").glob("*.tar"))) == 4


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_a_cache_limit_below_the_split_is_kept_and_every_sample_read(bucket_set, tmp_path, backend):  # noqa: F811
    """Three epochs with room for about two shards: each epoch windowed (the split does not fit), every sample in
    each, and the cache folder never larger than the limit (sampled every millisecond)."""
    from fastseg.sets import open_set

    url, _ = bucket_set
    shards = open_set(url).manifest.split("train").shards
    limit = 2 * max(s.bytes for s in shards) + 100
    assert limit < sum(s.bytes for s in shards)
    peak, stop = [0], threading.Event()

    def sample():
        folder = tmp_path / "shards"
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], sum(e.stat().st_size for e in os.scandir(folder) if e.is_file()))
            except FileNotFoundError:
                pass
            stop.wait(0.001)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        loader = make_loader(url, backend=backend, batch_size=2, workers=0 if backend == "torch" else 1,
                             return_keys=True, cache=tmp_path, cache_limit=str(limit))
        epochs = [sorted(k for b in loader for k in b["key"][:b["real"]]) for _ in range(3)]
    finally:
        stop.set()
        watcher.join()
    assert epochs == [[f"s{i:03d}" for i in range(10)]] * 3
    assert 0 < peak[0] <= limit, (peak[0], limit)


def test_a_cache_limit_too_small_for_the_order_names_the_least_that_works(bucket_set, tmp_path):  # noqa: F811
    url, _ = bucket_set
    with pytest.raises(FastsegError, match=r"--cache-limit 100 B is below what reading the train split needs at "
                                           r"once: .* give --cache-limit .* or more"):
        make_loader(url, backend="torch", workers=0, cache=tmp_path, cache_limit="100")
    with pytest.raises(FastsegError, match="cache_limit: not a size: 'lots'"):
        make_loader(url, backend="torch", workers=0, cache=tmp_path, cache_limit="lots")


def test_a_full_disk_is_one_line_naming_the_folder_and_the_limit(bucket_set, tmp_path, monkeypatch):  # noqa: F811
    import errno

    url, _ = bucket_set

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    loader = make_loader(url, backend="torch", workers=0, cache=tmp_path)
    with pytest.raises(FastsegError, match=rf"{tmp_path}/shards: no space left for a .* shard .*lower --cache-limit"):
        list(loader)
    deadline = time.monotonic() + 5  # the fetches started ahead of the failed one end on their own threads
    while [p for p in (tmp_path / "shards").iterdir() if p.is_file()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in (tmp_path / "shards").iterdir() if p.is_file()]  # no partial file left behind


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_a_killed_run_resumes_from_the_cache_with_the_batches_it_would_have_had(bucket_set, proxy, tmp_path,  # noqa: F811
                                                                               backend):
    url, _ = bucket_set
    options = dict(backend=backend, batch_size=2, workers=0 if backend == "torch" else 1, return_keys=True,
                   cache=tmp_path, seed=7)
    whole = make_loader(url, **options)
    uninterrupted = [keys_of(whole) for _ in range(2)]
    killed = make_loader(url, **options)
    taken = iter(killed)
    for _ in range(3):
        next(taken)
    state = killed.state()
    before = sum(shard_gets(proxy).values())
    resumed = make_loader(url, **options)
    resumed.restore(state)
    rest, following = keys_of(resumed), keys_of(resumed)
    assert rest == uninterrupted[0][3:] and following == uninterrupted[1]
    assert sum(shard_gets(proxy).values()) == before  # everything from the cache


def test_the_windowed_order_is_a_permutation_local_to_few_shards_and_well_mixed():
    counts = [60] * 50
    order = shard_window_order(np.random.default_rng((0, 0)), counts)
    assert sorted(order.tolist()) == list(range(3000))
    assert (order == shard_window_order(np.random.default_rng((0, 0)), counts)).all()  # a function of the seed
    shard_of = np.repeat(np.arange(50), counts)
    assert max(len(set(shard_of[order[i:i + 16]].tolist())) for i in range(0, 3000, 16)) <= 3  # few in flight
    windowed, full = randomness(order, counts), randomness(np.random.default_rng(0).permutation(3000), counts)
    assert abs(windowed["correlation"]) < 0.3 and abs(full["correlation"]) < 0.1
    assert 60 / 4 < windowed["shard_spread"] * 3000 < 2 * 60  # a shard's samples spread over about two shards
    assert 0.3 < full["shard_spread"] < 0.37  # a third of the split: fully random
