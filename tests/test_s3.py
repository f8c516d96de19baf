"""Shard sets in a bucket, against a real S3-compatible server (moto's standalone server) on 127.0.0.1: shard to
it, read back with both loaders, train from it, DDP slices, and every bad input as one clear line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastseg.cli import run_cli
from fastseg.cli.shard import main as shard_main
from fastseg.cli.train import main as train_main
from fastseg.errors import FastsegError
from fastseg.loading import make_loader

from .conftest import assert_same_samples, make_dataset, samples_by_key

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import servers  # noqa: E402  (benchmarks/servers.py: the stores' local servers, as the benchmarks start them)
from faults import FaultyProxy  # noqa: E402  (benchmarks/faults.py: the stores' benchmark injects faults with it)

POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


KEYS = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """moto's S3 server in its own process (DALI's client blocks the GIL of the process that calls it), checking
    credentials: its first three requests (an IAM user, its policy, its key) are free, every later one is signed
    with that key."""
    found = servers.moto_s3(bucket=None, env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3"))
    if found is None:
        pytest.skip("moto's server is not installed or did not start (pip install 'moto[server]')")
    url = found.url
    import boto3

    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup",
                       aws_secret_access_key="setup")
    iam.create_user(UserName="fastseg")
    iam.put_user_policy(UserName="fastseg", PolicyName="all", PolicyDocument=POLICY)
    key = iam.create_access_key(UserName="fastseg")["AccessKey"]
    KEYS.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"],
                AWS_DEFAULT_REGION="us-east-1")
    saved = {k: os.environ.get(k) for k in [*KEYS, "AWS_ENDPOINT_URL"]}
    os.environ.update(KEYS, AWS_ENDPOINT_URL=url)
    boto3.DEFAULT_SESSION = None  # boto3.client() keeps the credentials it first found: this server's keys are new
    boto3.client("s3").create_bucket(Bucket="sets")
    yield url
    found.stop()
    boto3.DEFAULT_SESSION = None
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3data")
    make_dataset(root / "train", count=10, size=(48, 32), mask="index", classes=3)
    make_dataset(root / "val", count=4, size=(48, 32), mask="index", classes=3, first_seed=30)
    return root


def shard_cli(capsys, *argv) -> tuple[int, str]:
    code = run_cli("fastseg-shard", shard_main, [str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def bucket_set(server, data, tmp_path_factory):
    """The same data sharded to disk and to s3://sets/camvid-like (shard rollover on both)."""
    disk = tmp_path_factory.mktemp("disk") / "shards"
    for out in (disk, "s3://sets/tiny"):
        assert run_cli("fastseg-shard", shard_main, [str(data), str(out), "--max-count", "3", "--workers", "1",
                                                     "--quiet"]) == 0
    return "s3://sets/tiny", disk


def test_shard_to_a_bucket_writes_the_set_and_refuses_to_clobber_it(bucket_set, data, capsys):
    import boto3

    url, disk = bucket_set
    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="sets", Prefix="tiny/")["Contents"])
    assert keys == sorted(f"tiny/{p.name}" for p in disk.iterdir())
    remote_manifest = json.loads(boto3.client("s3").get_object(Bucket="sets", Key="tiny/manifest.json")["Body"].read())
    assert remote_manifest == json.loads((disk / "manifest.json").read_text())  # same shards, same sha256
    code, err = shard_cli(capsys, data, url, "--workers", "1", "--quiet")
    assert code == 1 and "s3://sets/tiny already holds" in err and "--overwrite" in err
    code, _ = shard_cli(capsys, "--verify", url, "--quiet")
    assert code == 0


def test_a_run_reads_the_manifest_once(bucket_set, tmp_path, monkeypatch):
    from fastseg.sets import open_set
    from fastseg.loading import SegDataModule

    url, _ = bucket_set
    monkeypatch.setenv("FASTSEG_CACHE", str(tmp_path / "cache"))
    for split in ("train", "val"):  # the index cache warmed, so that only start-up requests are left to count
        make_loader(url, split=split, backend="torch", workers=0)
    import obstore

    calls = []
    for name in ("list_with_delimiter", "get", "get_range", "head"):  # every request the storage layer makes
        monkeypatch.setattr(obstore, name, lambda *a, _real=getattr(obstore, name), _name=name, **k:
                            calls.append(_name) or _real(*a, **k))
    make_loader(url, backend="torch", workers=0)
    # one listing and one manifest read, made together: no second listing, no HEAD
    assert sorted(calls) == ["get", "list_with_delimiter"]
    calls.clear()
    shard_set = open_set(url)
    data = SegDataModule(shard_set, backend="torch", workers=0)
    data.setup()  # the train and val loaders, from the set opened once
    assert sorted(calls) == ["get", "list_with_delimiter"] and set(data.loaders) == {"train", "val"}


def test_overwrite_refuses_a_prefix_that_is_not_a_shard_set(server, data, capsys):
    import boto3

    s3 = boto3.client("s3")
    for name, body in (("backup.tar", b"a user's archive"), ("report.pdf", b"precious")):
        s3.put_object(Bucket="sets", Key=f"mine/{name}", Body=body)
    code, err = shard_cli(capsys, data, "s3://sets/mine", "--overwrite", "--workers", "1", "--quiet")
    assert code == 1 and "s3://sets/mine is not a fastseg shard set (no manifest.json)" in err
    assert "backup.tar, report.pdf" in err
    kept = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="sets", Prefix="mine/")["Contents"])
    assert kept == ["mine/backup.tar", "mine/report.pdf"]


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_both_loaders_read_the_bucket_as_they_read_the_disk(bucket_set, backend, tmp_path):
    """The same samples and pixels; the validation split in the same order. The shuffled train split's first epoch
    from a bucket is a permutation of shards mixed within a window (loading/order.py), so it is compared by key."""
    url, disk = bucket_set
    for split in ("train", "val"):
        remote_batches, disk_batches = (list(make_loader(s, split=split, backend=backend, batch_size=3, augment="none",
                                                         return_keys=True, workers=1, cache=tmp_path))
                                        for s in (url, disk))
        if split == "val":
            assert [b["key"] for b in remote_batches] == [b["key"] for b in disk_batches]
        assert_same_samples(remote_batches, disk_batches)
        assert len(samples_by_key(remote_batches)) == (10 if split == "train" else 4)


def test_from_a_bucket_both_loaders_give_the_same_batches_in_every_epoch(bucket_set, tmp_path):
    """Windowed first epoch, full permutations after it (the split fits the cache): the same keys, masks and
    images through DALI and the torch loader, epoch after epoch."""
    url, _ = bucket_set
    options = dict(backend="dali", batch_size=3, augment="flip", return_keys=True, workers=1, seed=4, cache=tmp_path)
    epochs = {name: [list(loader) for _ in range(3)] for name, loader in
              (("dali", make_loader(url, **options)), ("torch", make_loader(url, **{**options, "backend": "torch"})))}
    for dali_epoch, torch_epoch in zip(epochs["dali"], epochs["torch"]):
        assert [b["key"] for b in dali_epoch] == [b["key"] for b in torch_epoch]
        for a, b in zip(dali_epoch, torch_epoch):
            assert torch.equal(a["mask"], b["mask"]) and torch.allclose(a["image"], b["image"], atol=1e-5)
    assert len({str([b["key"] for b in epoch]) for epoch in epochs["dali"]}) == 3  # a new order every epoch


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_ddp_slices_from_the_bucket_are_disjoint_and_complete(bucket_set, backend):
    url, _ = bucket_set
    keys = []
    for rank in range(2):
        loader = make_loader(url, backend=backend, batch_size=2, augment="flip", rank=rank, world_size=2,
                             return_keys=True, workers=1)
        keys.append([k for b in loader for k, m in zip(b["key"], b["mask"]) if not (m == 255).all()])
    assert not set(keys[0]) & set(keys[1]) and len(keys[0]) + len(keys[1]) == 10


def test_train_one_epoch_from_the_bucket(bucket_set, tmp_path):
    url, _ = bucket_set
    out = tmp_path / "run"
    assert run_cli("fastseg-train", train_main, ["--shards", url, "--out", str(out), "--epochs", "1", "--width", "4",
                                                 "--batch-size", "2", "--accelerator", "cpu", "--workers", "1",
                                                 "--image-size", "32", "48"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_pixels"] == 4 * 32 * 48 and metrics["throughput"]["per_epoch"][0]["images"] == 10
    config = (out / "config.json").read_text()
    assert '"shards": "s3://sets/tiny"' in config
    assert KEYS["AWS_SECRET_ACCESS_KEY"] not in config and KEYS["AWS_ACCESS_KEY_ID"] not in config
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".yaml", ".txt"):
            assert KEYS["AWS_SECRET_ACCESS_KEY"] not in path.read_text()
    # fastseg-predict evaluates a split straight from the bucket
    from fastseg.cli.predict import main as predict_main

    assert run_cli("fastseg-predict", predict_main, ["--checkpoint", str(out / "checkpoints/last.ckpt"), "--shards",
                                                     url, "--split", "val", "--out", str(tmp_path / "eval"), "--workers", "1"]) == 0
    assert json.loads((tmp_path / "eval/metrics.json").read_text())["val_pixels"] == 4 * 32 * 48
    # a checkpoint kept in the bucket: fetched once into the cache, the same scores
    from fastseg import storage

    storage.upload(out / "checkpoints/last.ckpt", "s3://sets/runs/last.ckpt")
    os.environ["FASTSEG_CACHE"] = str(tmp_path / "cache")
    try:
        assert run_cli("fastseg-predict", predict_main, ["--checkpoint", "s3://sets/runs/last.ckpt", "--shards", url,
                                                         "--split", "val", "--out", str(tmp_path / "eval2"),
                                                         "--workers", "1"]) == 0
    finally:
        del os.environ["FASTSEG_CACHE"]
    assert json.loads((tmp_path / "eval2/metrics.json").read_text())["val_miou"] == \
        json.loads((tmp_path / "eval/metrics.json").read_text())["val_miou"]
    from fastseg.training.checkpoints import local_checkpoint

    with pytest.raises(FastsegError, match="s3://sets/runs/none.ckpt: no such checkpoint in the store"):
        local_checkpoint("s3://sets/runs/none.ckpt")
    # a run is written to a folder: --out in a store is refused, naming the way
    assert run_cli("fastseg-train", train_main, ["--shards", url, "--out", "s3://sets/runs/a", "--epochs", "1"]) == 1


def test_an_upload_cut_short_never_looks_complete(server, data, tmp_path, monkeypatch, capsys):
    from fastseg import storage

    uploaded = []

    def failing_upload(path, url):  # the third file fails, as a killed or cut-off run would
        if len(uploaded) == 2:
            raise FastsegError(f"{url}: connection lost")
        uploaded.append(url)
        real_upload(path, url)

    real_upload = storage.upload
    monkeypatch.setattr(storage, "upload", failing_upload)
    code, err = shard_cli(capsys, data, "s3://sets/cut", "--max-count", "3", "--workers", "1", "--quiet")
    assert code == 1 and "connection lost" in err
    assert uploaded and "manifest.json" not in storage.names("s3://sets/cut")
    with pytest.raises(FastsegError, match=r"s3://sets/cut has 1 shard\(s\) but no manifest.json: an unfinished"):
        make_loader("s3://sets/cut")


def test_bad_remote_input_is_one_line_naming_the_url(bucket_set, data, monkeypatch, tmp_path, capsys):
    import boto3

    url, disk = bucket_set
    cases = [
        ("s3://missing-bucket/x", "s3://missing-bucket/x: no bucket 'missing-bucket'"),
        ("s3://sets/nothing-here", "s3://sets/nothing-here: no manifest.json here"),
    ]
    for shards, message in cases:
        code = run_cli("fastseg-train", train_main, ["--shards", shards, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 1 and message in err and "Traceback" not in err and err.count("\n") == 1

    # a shard missing from the bucket
    client = boto3.client("s3")
    for path in disk.iterdir():
        client.upload_file(str(path), "sets", f"holey/{path.name}")
    client.delete_object(Bucket="sets", Key="holey/train-000001.tar")
    with pytest.raises(FastsegError, match="s3://sets/holey/train-000001.tar: listed in the manifest but missing"):
        make_loader("s3://sets/holey", backend="torch")

    # wrong credentials, for fastseg-shard and the loaders alike (a changed setting gets a new client)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    code, err = shard_cli(capsys, "--verify", url, "--quiet")
    assert code == 1 and f"{url}: access denied" in err and "AWS_SECRET_ACCESS_KEY" in err and "Traceback" not in err
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY")
    with pytest.raises(FastsegError, match=f"{url}: access denied"):
        make_loader(url, backend="dali")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEYS["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEYS["AWS_SECRET_ACCESS_KEY"])

    # an unreachable endpoint: said within seconds, naming it
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{servers.free_port()}")
    start = time.time()
    with pytest.raises(FastsegError, match=r"s3://sets/tiny: cannot reach http://127.0.0.1:\d+"):
        make_loader(url)
    assert time.time() - start < 60


def test_loader_bench_sends_a_set_in_a_bucket_to_store_bench(bucket_set, monkeypatch, capsys):
    """loader_bench compares loaders on disk; a set in a bucket (the peers included) is store_bench's, and it says so
    before reading anything."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import loader_bench

    url, _ = bucket_set
    monkeypatch.setattr(sys, "argv", ["loader_bench.py", "--shards", url, "--loaders", "torch"])
    with pytest.raises(SystemExit) as stopped:
        loader_bench.main()
    assert stopped.value.code == 2 and f"{url}: loader_bench.py compares loaders on disk" in capsys.readouterr().err


def test_ddp_training_from_the_bucket(bucket_set, tmp_path):
    url, _ = bucket_set
    out = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "fastseg.cli.train", "--shards", url, "--out", str(out),
                             "--epochs", "1", "--devices", "2", "--width", "4", "--batch-size", "1", "--accelerator",
                             "cpu", "--workers", "1", "--image-size", "32", "48", "--log-batch-keys"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    keys = [[k for line in (out / f"batches/rank{r}.jsonl").read_text().splitlines()
             for k in json.loads(line)["keys"]] for r in range(2)]
    assert not set(keys[0]) & set(keys[1]) and len(keys[0]) + len(keys[1]) == 10  # disjoint and complete
    assert json.loads((out / "metrics.json").read_text())["val_pixels"] == 4 * 32 * 48


def test_parts_written_to_a_bucket_merge_into_the_set_one_machine_writes(bucket_set, data, capsys):
    """Each part uploads its own shards and record; the merge reads the records and the listing, never a shard."""
    from fastseg import storage
    from fastseg.shards import merge

    url, disk = bucket_set
    for part in ("0/2", "1/2"):
        assert run_cli("fastseg-shard", shard_main, [str(data), "s3://sets/parts", "--part", part, "--max-count",
                                                     "3", "--workers", "1", "--quiet"]) == 0
    read = []
    real_read = storage.read
    storage.read = lambda url_: read.append(url_) or real_read(url_)
    try:
        merged = merge("s3://sets/parts")
    finally:
        storage.read = real_read
    assert all(name.rpartition("/")[2].startswith("part-") for name in read)  # records only
    single = json.loads((disk / "manifest.json").read_text())
    assert merged.class_pixels == single["class_pixels"] and merged.sizes == single["sizes"]
    for counts in ("class_pixels", "class_images", "images"):  # the checks' counts add up from the parts' records
        assert merged.statistics[counts] == single["statistics"][counts]
    assert len(merged.statistics["warnings"]) == len(single["statistics"]["warnings"])
    # the report of a set in a bucket, written in parts: read through the listing and ranged reads
    from fastseg.cli.report import main as report_main

    page = disk.parent / "parts-report.html"
    assert run_cli("fastseg-report", report_main, ["s3://sets/parts", "--out", str(page), "--samples", "3"]) == 0
    shown = sum(min(3, split["samples"]) for split in single["splits"].values())
    assert page.read_text().count("<img src='data:image/jpeg;base64,") == shown
    for split in ("train", "val"):
        keys = {backend: sorted(k for b in make_loader("s3://sets/parts", split=split, backend=backend, batch_size=3,
                                                       workers=0, shuffle=False, augment="none", return_keys=True)
                               for k in b["key"][: b["real"]]) for backend in ("dali", "torch")}
        assert keys["dali"] == keys["torch"] and len(keys["dali"]) == single["splits"][split]["samples"]
    code, _ = shard_cli(capsys, "--verify", "s3://sets/parts", "--quiet")
    assert code == 0


@pytest.mark.parametrize("backend", ["dali", "torch"])
@pytest.mark.parametrize("store", ["raw", "auto"])
def test_a_raw_set_in_a_bucket_loads_as_on_disk(server, tmp_path, backend, store):
    """--store raw (images and masks as pixels) and auto (raw images, PNG masks) from a bucket: the shuffled
    training split (DALI's feed: parallel ranged GETs) and the validation split (DALI's reader streaming the
    shards), pixel for pixel the set on disk."""
    make_dataset(tmp_path / "png/train", count=6, size=(40, 32), image_ext="png", mask="index", classes=3)
    make_dataset(tmp_path / "png/val", count=3, size=(40, 32), image_ext="png", mask="index", classes=3,
                 first_seed=20)
    url = f"s3://sets/{store}-{backend}"
    for out in (tmp_path / "disk", url):
        assert run_cli("fastseg-shard", shard_main, [str(tmp_path / "png"), str(out), "--store", store,
                                                     "--workers", "1", "--quiet"]) == 0
    for split in ("train", "val"):
        remote, disk = (list(make_loader(s, split=split, backend=backend, batch_size=3, augment="none",
                                         return_keys=True, workers=1, seed=2, cache=tmp_path / "cache"))
                        for s in (url, tmp_path / "disk"))
        assert_same_samples(remote, disk)


def test_a_member_read_survives_transient_faults_and_fails_fast_on_a_missing_object(monkeypatch):
    """Faults injected at the client: a 503, a stall, a reset; the bytes arrive whole on the fourth try. A body cut
    short is read again. A missing object is named at once, and faults that never stop end in one line after the
    bounded attempts."""
    from obstore import exceptions as ox

    from fastseg import fetching

    script = []

    async def get_range(_url, _offset, _size):
        step = script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    waits = []

    async def pause(seconds):
        waits.append(seconds)

    monkeypatch.setattr(fetching, "get_range", get_range)
    monkeypatch.setattr(fetching, "pause", pause)
    script[:] = [ox.GenericError("Server returned non-2xx status code: 503 Service Unavailable: SlowDown"),
                 TimeoutError("operation timed out"), ConnectionResetError("connection reset by peer"), b"abcd"]
    assert fetching.read_range("s3://b/k", 10, 4) == b"abcd" and not script
    assert len(waits) == 3 and waits == sorted(waits) and max(waits) <= 0.8  # backoff, bounded
    script[:] = [b"ab", b"abcd"]  # cut short: read again
    assert fetching.read_range("s3://b/k", 10, 4) == b"abcd"
    waits.clear()
    script[:] = [FileNotFoundError("Object at location k not found")]  # what obstore raises for a missing object
    with pytest.raises(FastsegError, match="s3://b/k: not found"):
        fetching.read_range("s3://b/k", 10, 4)
    script[:] = [ox.PermissionDeniedError("403 AccessDenied")]
    with pytest.raises(FastsegError, match="s3://b/k: access denied"):
        fetching.read_range("s3://b/k", 10, 4)
    assert not waits  # never retried
    script[:] = [ox.GenericError("Server returned non-2xx status code: 500 Internal Server Error")] * \
        fetching.READ_ATTEMPTS
    with pytest.raises(FastsegError, match=r"s3://b/k: reading 4 bytes at 10 still failed after 5 attempts"):
        fetching.read_range("s3://b/k", 10, 4)


def test_a_late_read_is_asked_again_and_the_first_answer_wins(monkeypatch):
    """A request that stalls past the deadline the latency seen so far sets is sent again beside it; the second
    answers first and is the one returned, long before the stalled one would have timed out."""
    import asyncio

    from fastseg import fetching

    calls = []

    async def get_range(_url, offset, size):
        calls.append(offset)
        if offset == 999 and calls.count(999) == 1:  # the first request for this range stalls
            await asyncio.sleep(30)
        await asyncio.sleep(0.01)
        return b"x" * size

    monkeypatch.setattr(fetching, "get_range", get_range)
    for offset in range(10):  # answers of 10 ms: the deadline becomes max(50 ms, 2 x p95)
        assert fetching.read_range("s3://b/k", offset, 4) == b"xxxx"
    hedged, start = fetching.reader().hedges, time.monotonic()
    assert fetching.read_range("s3://b/k", 999, 4) == b"xxxx"
    assert time.monotonic() - start < 0.5 and fetching.reader().hedges == hedged + 1 and calls.count(999) == 2


@pytest.mark.parametrize("cache", ["cache", "none"])
@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_an_epoch_with_transient_faults_gives_the_clean_epochs_batches(bucket_set, backend, cache, monkeypatch,
                                                                       tmp_path):
    """Through the shard cache (a GET a shard: a quarter of them failing, so that some do) and by ranged reads
    (a GET a sample: 5% failing), four tries of the epoch, each with an empty cache: the clean epoch's batches."""
    from fastseg import storage

    url, _ = bucket_set
    options = dict(split="train", backend=backend, batch_size=3, augment="flip", seed=5, shuffle=True,
                   return_keys=True, workers=0 if backend == "torch" else 1, checksums=False)
    place = (lambda name: tmp_path / name) if cache == "cache" else (lambda name: "none")
    clean = list(make_loader(url, cache=place("clean"), **options))
    proxy = FaultyProxy(os.environ["AWS_ENDPOINT_URL"], share=0.25 if cache == "cache" else 0.05, seed=1, stall=1.5)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setattr(storage, "READ_TIMEOUT", 3.0)  # the outer bound; stalls end at fetching's ~1 s
        start = time.time()
        faulty = [batch for i in range(4) for batch in make_loader(url, cache=place(f"try{i}"), **options)]
        seconds = time.time() - start
    finally:
        proxy.close()
    print(f"{len(proxy.faults)} faults in {proxy.requests} requests: {proxy.faults}")
    assert len(proxy.faults) >= 2 and {"503", "reset", "stall"} & set(proxy.faults), proxy.faults
    for copy in range(4):  # each loader made again: the same first epoch, whatever failed on the way
        for a, b in zip(clean, faulty[copy * len(clean):(copy + 1) * len(clean)]):
            assert a["key"] == b["key"] and torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert seconds < 60, seconds  # stalls hedged or retried after about a second each, not a minute


def test_a_profile_with_an_endpoint_reads_the_bucket_with_no_aws_variables(bucket_set, tmp_path):
    """A profile pointing at an S3-compatible server (MinIO, R2: `endpoint_url` and `region` in ~/.aws/config, keys
    in the credentials file) and no AWS_* variables but AWS_PROFILE: requests go to that endpoint, as boto3 sends
    them, not to AWS."""
    url, _ = bucket_set
    (tmp_path / "config").write_text(f"[profile local]\nregion = us-east-1\nendpoint_url = "
                                     f"{os.environ['AWS_ENDPOINT_URL']}\n")
    (tmp_path / "credentials").write_text(f"[local]\naws_access_key_id = {KEYS['AWS_ACCESS_KEY_ID']}\n"
                                          f"aws_secret_access_key = {KEYS['AWS_SECRET_ACCESS_KEY']}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_PROFILE="local", AWS_CONFIG_FILE=str(tmp_path / "config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"), FASTSEG_CACHE=str(tmp_path / "cache"))
    script = (f"from fastseg.loading import make_loader\n"
              f"print(sum(b['real'] for b in make_loader({url!r}, backend='torch', workers=0, batch_size=4)))\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and done.stdout.strip() == "10", done.stderr[-2000:]
