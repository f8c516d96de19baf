"""Where shard sets and checkpoints live: a local folder or an S3-compatible prefix (`s3://bucket/prefix`).

Local work in progress sits beside its target as `.NAME.partial-PID` and is renamed into place only when complete.
A killed writer leaves its partial path behind; the next writer to the same target sweeps those whose process is
gone (never one that is still being written: its process is alive). A writer replacing a folder first moves the old
one aside to `.NAME.old-PID`; if it was killed before the new one took its place, the sweep moves the old one back,
so no kill point loses the last complete version.

In a bucket, this is the only module that imports boto3. Credentials, region and endpoint come from the standard
AWS settings (environment, ~/.aws/config and credentials, AWS_PROFILE, and AWS_ENDPOINT_URL for S3-compatible
services such as MinIO or Ceph); fastseg never writes them anywhere. Every failure of the client becomes one FastsegError that names the URL and the fix.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import FastsegError

SCHEME = "s3://"


# --- local partial paths -------------------------------------------------------------------------------------
def partial_path(target: Path) -> Path:
    return target.parent / f".{target.name}.partial-{os.getpid()}"


def writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def old_path(target: Path) -> Path:
    return target.parent / f".{target.name}.old-{os.getpid()}"


def sweep_stale(target: Path) -> list[str]:
    """Clean up after writers of `target` that no longer run: an `.old` path whose target is missing is moved
    back into place; other partial and `.old` paths are removed. Returns what was done, one line each."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(partial|old)-(\d+)$")
    done = []
    if not target.parent.is_dir():
        return done
    stale = [path for path in target.parent.iterdir() if (found := pattern.match(path.name))
             and int(found.group(2)) != os.getpid() and not writer_alive(int(found.group(2)))]
    for path in sorted(stale, key=lambda p: ".old-" not in p.name):  # restore before anything is removed
        if ".old-" in path.name and not target.exists():
            path.rename(target)
            done.append(f"restored {target} from {path.name}, where a killed run had moved it")
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        done.append(f"removed {path}, left by a run that was killed")
    return done


# --- s3:// ----------------------------------------------------------------------------------------------------


def is_remote(location) -> bool:
    return str(location).startswith(SCHEME)


def location(text: str):
    """A command-line location: an s3:// URL stays a string (a Path would fold its '//'), anything else a Path."""
    return text.rstrip("/") if is_remote(text) else Path(text)


def join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def split_url(url: str) -> tuple[str, str]:
    bucket, _, key = url[len(SCHEME):].partition("/")
    if not bucket:
        raise FastsegError(f"{url}: no bucket in the URL; write s3://BUCKET/PREFIX")
    return bucket, key


_clients = {}  # (process, AWS settings) -> client
# A request waits at most READ_TIMEOUT s for bytes (a member is one image or mask: a stall is a fault, not a slow
# link; botocore's own default is 60 s); a member read that fails transiently (a stall, a reset or cut connection,
# a 5xx, throttling) is retried READ_ATTEMPTS times in all, waiting 0.2, 0.4, 0.8, 1.6 s between (jittered), so a
# flaky network costs seconds and changes no byte; a missing object or a refused access is never retried.
READ_TIMEOUT = float(os.environ.get("FASTSEG_S3_READ_TIMEOUT", "10"))
READ_ATTEMPTS = 5
TRANSIENT_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "Throttling",
                   "ThrottlingException", "RequestTimeout", "RequestLimitExceeded"}


def settings() -> dict[str, str]:
    """The AWS_* environment (endpoint, profile, credentials) of this process, to hand to loader workers; kept in
    memory only."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def use_settings(aws: dict[str, str]) -> None:
    if aws and any(os.environ.get(k) != v for k, v in aws.items()):
        os.environ.update(aws)


def client():
    """One client per process (the torch loader's workers each make their own) and AWS settings (changed
    credentials or endpoint get a new one), with short timeouts and few retries, so an unreachable endpoint is
    reported in seconds rather than minutes."""
    key = (os.getpid(), tuple(sorted(settings().items())))
    if key not in _clients:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as err:  # pragma: no cover - depends on the install
            raise FastsegError("s3:// needs boto3: pip install boto3") from err
        config = Config(connect_timeout=5, read_timeout=READ_TIMEOUT, retries={"max_attempts": 3, "mode": "standard"},
                        max_pool_connections=32)
        _clients.clear()  # one live client: the previous settings' is not needed again
        _clients[key] = boto3.session.Session().client("s3", config=config)
    return _clients[key]


def endpoint() -> str:
    return client().meta.endpoint_url


def _no_bucket(url: str) -> str:
    return f"{url}: no bucket {split_url(url)[0]!r} at {endpoint()}; create it, or fix the URL or AWS_ENDPOINT_URL"


@contextmanager
def s3_errors(url: str, missing: str | None = None):
    """Turn the client's exceptions into one line naming `url` and the fix; `missing` is the message for a key that
    is not there (None: say so plainly)."""
    from botocore import exceptions as bx

    try:
        yield
    except bx.ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            raise FastsegError(_no_bucket(url)) from None
        if code in ("NoSuchKey", "404", "NotFound"):
            raise FastsegError(missing or f"{url}: not found in the bucket") from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
                    "ExpiredToken"):
            raise FastsegError(f"{url}: access denied ({code}); check the credentials (AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the bucket's permissions") from None
        raise FastsegError(f"{url}: the S3 request failed ({code or err}); check the URL and the service") from None
    except bx.NoCredentialsError:
        raise FastsegError(f"{url}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                           "or AWS_PROFILE") from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError) as err:
        raise FastsegError(f"{url}: cannot reach the S3 endpoint {endpoint()} ({type(err).__name__}); check "
                           "AWS_ENDPOINT_URL and the network") from None
    except bx.BotoCoreError as err:
        raise FastsegError(f"{url}: S3 client error ({err}); check the AWS settings") from None


def check_bucket(url: str) -> None:
    bucket, _ = split_url(url)
    with s3_errors(url, missing=_no_bucket(url)):  # head_bucket reports a missing bucket as a bare 404
        client().head_bucket(Bucket=bucket)


def read(url: str, missing: str | None = None) -> bytes:
    bucket, key = split_url(url)
    with s3_errors(url, missing):
        return client().get_object(Bucket=bucket, Key=key)["Body"].read()


def read_range(url: str, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` of an object, retried where the failure is transient (READ_ATTEMPTS): the request
    and the body's bytes alike, which botocore's own retries do not cover once the headers have come."""
    bucket, key = split_url(url)
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            body = client().get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + size - 1}")["Body"]
            data = body.read()
            if len(data) != size:
                raise ConnectionError(f"{len(data)} of {size} bytes arrived")
            return data
        except Exception as err:
            if not transient(err):
                with s3_errors(url):
                    raise
            if attempt == READ_ATTEMPTS:
                raise FastsegError(f"{url}: reading {size} bytes at {offset} still failed after {READ_ATTEMPTS} "
                                   f"attempts ({type(err).__name__}: {str(err)[:200]}); check the network and the "
                                   f"endpoint {endpoint()}") from None
            time.sleep(0.2 * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")  # pragma: no cover


def transient(err: Exception) -> bool:
    """A failure worth one more try: a timeout, a connection reset or cut short, a server error or throttling."""
    from botocore import exceptions as bx

    if isinstance(err, bx.ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return str(error.get("Code", "")) in TRANSIENT_CODES or status >= 500
    streaming = tuple(getattr(bx, name) for name in ("ResponseStreamingError", "IncompleteReadError")
                      if hasattr(bx, name))
    return isinstance(err, (bx.ReadTimeoutError, bx.ConnectTimeoutError, bx.ConnectionClosedError,
                            bx.EndpointConnectionError, ConnectionError, TimeoutError, *streaming))


def read_span(path: str, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` of a local file or an s3:// object."""
    if is_remote(path):
        return read_range(path, offset, size)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def sizes(root: str) -> dict[str, int]:
    """Name -> size of the objects directly under the prefix `root` (no deeper folders), from one listing."""
    bucket, prefix = split_url(root)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    found = {}
    with s3_errors(root):
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            found.update((item["Key"][len(prefix):], item["Size"]) for item in page.get("Contents", []))
    return found


def names(root: str) -> list[str]:
    return sorted(sizes(root))


def upload(path: Path, url: str) -> None:
    bucket, key = split_url(url)
    with s3_errors(url):
        client().upload_file(str(path), bucket, key)


def download(url: str, path: Path) -> None:
    bucket, key = split_url(url)
    with s3_errors(url, f"{url}: listed in the manifest but missing from the bucket; re-shard or restore it"):
        client().download_file(bucket, key, str(path))


def delete(root: str, names_to_delete: list[str]) -> None:
    bucket, prefix = split_url(root)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    for start in range(0, len(names_to_delete), 1000):
        batch = [{"Key": prefix + n} for n in names_to_delete[start:start + 1000]]
        with s3_errors(root):
            client().delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
