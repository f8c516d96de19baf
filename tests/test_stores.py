"""The same storage interface (fastseg/storage.py, over obstore) against the other stores' local servers: Azure Blob
Storage through Azurite (npm; .ci/run installs it) and Google Cloud Storage through fake-gcs-server where it is
installed. Each is started by its fixture and skipped, with the reason, where it cannot start. S3 (moto) has its
own file, tests/test_s3.py."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastseg.cli import run_cli
from fastseg.cli.shard import main as shard_main
from fastseg.errors import FastsegError
from fastseg.loading import make_loader

from .conftest import assert_same_samples, make_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from faults import FaultyProxy  # noqa: E402

# Azurite's well-known development account (public, in Microsoft's documentation)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen, seconds: float = 30) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def azurite_binary() -> str | None:
    local = Path(__file__).parents[1] / ".ci/node/node_modules/.bin/azurite-blob"
    return os.environ.get("FASTSEG_AZURITE") or (str(local) if local.exists() else shutil.which("azurite-blob"))


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite's blob service on a free port, in memory, with the container `sets`; the environment that points
    obstore at it (the emulator's account and key are built in)."""
    binary = azurite_binary()
    if not binary:
        pytest.skip("Azurite is not installed (npm install azurite; .ci/run does it into .ci/node)")
    try:
        from azure.storage.blob import BlobServiceClient
    except ImportError:
        pytest.skip("azure-storage-blob is not installed (the test extra): it makes the test container")
    port = free_port()
    proc = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                             "--skipApiVersionCheck", "--silent"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for(port, proc):
        proc.kill()
        pytest.skip("Azurite did not start")
    url = f"http://127.0.0.1:{port}/devstoreaccount1"
    BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={url};"
    ).create_container("sets")
    environment = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
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
def gcs(tmp_path_factory):
    """fake-gcs-server (it speaks GCS's XML API, which obstore uses) where it is installed."""
    binary = os.environ.get("FASTSEG_FAKE_GCS") or shutil.which("fake-gcs-server")
    if not binary:
        pytest.skip("fake-gcs-server is not installed (a Go binary; set FASTSEG_FAKE_GCS): the emulator on PyPI, "
                    "gcp-storage-emulator, answers only GCS's JSON API, and obstore's GCS client lists and reads "
                    "through the XML API (list-type=2), so gs:// is tested against a real GCS-compatible server only")
    port = free_port()
    root = tmp_path_factory.mktemp("gcs")
    (root / "sets").mkdir()
    proc = subprocess.Popen([binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-filesystem-root",
                             str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for(port, proc):
        proc.kill()
        pytest.skip("fake-gcs-server did not start")
    account = root / "account.json"
    account.write_text(f'{{"gcs_base_url": "http://127.0.0.1:{port}", "disable_oauth": true, "client_email": "", '
                       f'"private_key": "", "private_key_id": ""}}')
    saved = os.environ.get("GOOGLE_SERVICE_ACCOUNT")
    os.environ["GOOGLE_SERVICE_ACCOUNT"] = str(account)
    yield
    proc.kill()
    os.environ.pop("GOOGLE_SERVICE_ACCOUNT") if saved is None else os.environ.__setitem__("GOOGLE_SERVICE_ACCOUNT", saved)


def test_a_set_sharded_to_gcs_loads_as_on_disk(gcs, tmp_path):
    data = make_dataset(tmp_path / "data", count=6, size=(48, 32))
    assert run_cli("fastseg-shard", shard_main, [str(data), "gs://sets/tiny", "--val-fraction", "0", "--workers", "1",
                                                 "--quiet"]) == 0
    assert run_cli("fastseg-shard", shard_main, [str(data), str(tmp_path / "disk"), "--val-fraction", "0",
                                                 "--workers", "1", "--quiet"]) == 0
    options = dict(backend="torch", batch_size=3, return_keys=True, workers=0)
    for a, b in zip(make_loader("gs://sets/tiny", **options), make_loader(tmp_path / "disk", **options)):
        assert a["key"] == b["key"] and torch.equal(a["image"], b["image"])
