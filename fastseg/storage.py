"""Where shard sets live: a local folder, or a prefix in an object store: `s3://bucket/prefix` (AWS and S3-compatible
services), `gs://bucket/prefix` (Google Cloud Storage), `az://container/prefix` (Azure Blob Storage), and
`https://host/path` for reading a set published over HTTP. This is the only module that knows which one a location
is; everything else lists, reads, writes and deletes through it.

Object stores go through obstore, the Python face of the Rust `object_store` crate (what Apache Arrow, DataFusion
and crates.io use): one client for S3, GCS and Azure, requests made outside the GIL from its own connection pools,
so DALI's feed and the torch loader's workers read members concurrently from any store. Credentials are each
store's usual chain, never copied anywhere by fastseg:
- S3: the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE), the shared
  config and credentials files, SSO, web identity (EKS), ECS and EC2 instance roles (through boto3's provider chain
  where boto3 is installed, obstore's own otherwise); the endpoint of an S3-compatible service (MinIO, Ceph, R2)
  and the region as boto3 resolves them: AWS_ENDPOINT_URL(_S3), else the profile's `endpoint_url` and `region`.
- GCS: GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT(_PATH/_KEY), gcloud's application-default
  credentials, the metadata server (GCE, GKE workload identity); GOOGLE_BASE_URL for an emulator.
- Azure: AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or a SAS token, a service principal
  (AZURE_CLIENT_ID/SECRET/TENANT_ID), managed or workload identity, the Azure CLI; AZURE_STORAGE_USE_EMULATOR=true
  (and AZURITE_BLOB_STORAGE_URL) for Azurite.

Ranged reads (members, and the parts of shards that the loaders cache) are made by fetching.py: bounded by a stall
timeout, hedged when late, retried when the failure is transient (`transient` here says which), so a flaky network
costs little and changes no byte; a missing object or a refused access is never retried and fails at once with one
line naming the URL and the fix (`errors`). The store's own client timeout (READ_TIMEOUT) stays the outer bound.
Uploads get the store's own retries and a timeout sized for a shard's parts.

Local files are written whole or not at all by atomic.py.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from . import atomic
from .errors import FastsegError
from .processes import note_native_threads

SCHEMES = ("s3://", "gs://", "az://", "https://", "http://")
WRITABLE = ("s3://", "gs://", "az://")
READ_TIMEOUT = float(os.environ.get("FASTSEG_READ_TIMEOUT", os.environ.get("FASTSEG_S3_READ_TIMEOUT", "10")))
WRITE_TIMEOUT = 600.0  # one request of an upload: a multipart part of 5 MiB, or a whole small file
# the environment each store's client reads, kept for loader workers that a forkserver started earlier
SETTINGS_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "AZURE_", "AZURITE_")


# --- locations -------------------------------------------------------------------------------------------------
def is_remote(location) -> bool:
    """Whether `location` is in an object store; only this module asks: elsewhere a location's kind (`at`) says
    how it behaves."""
    return str(location).startswith(SCHEMES)


@dataclass(frozen=True)
class Folder:
    """A local or mounted folder (or a file in one): read by pread, written by renaming finished files into place."""

    path: Path
    streamed = False  # reads go over the network: fetched ahead, ranged and hedged (fetching.py)
    hashed_at_start = True  # the loaders check each shard's sha256 at start-up (cheap from a disk)
    uploads = False  # written by uploading (a progress bar; nothing can be renamed, so the manifest goes last)

    def local(self, refusal: str) -> Path:
        """The path, where a command needs one on this machine (`refusal`: the message a store gets)."""
        return self.path


@dataclass(frozen=True)
class Store:
    """A prefix or an object in an object store (s3://, gs://, az://, https://)."""

    url: str
    streamed = True
    hashed_at_start = False  # hashing would read every byte before the first batch: --verify does
    uploads = True

    def local(self, refusal: str) -> Path:
        raise FastsegError(refusal)


def at(where) -> Folder | Store:
    """What kind of location `where` (a path or a URL) is, with the behaviours in which the two kinds differ."""
    return Store(str(where).rstrip("/")) if is_remote(where) else Folder(Path(where))


def location(text: str):
    """A command-line location: a URL stays a string (a Path would fold its '//'), anything else a Path."""
    return text.rstrip("/") if is_remote(text) else Path(text)


def join(root, name: str):
    """`name` inside the folder or prefix `root`."""
    return f"{str(root).rstrip('/')}/{name}" if is_remote(root) else Path(root) / name


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or container or host, key) of an object-store URL."""
    scheme, _, rest = str(url).partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise FastsegError(f"{url}: no bucket in the URL; write {scheme}://BUCKET/PREFIX")
    return scheme, bucket, key


def check_writable(location) -> None:
    if is_remote(location) and not str(location).startswith(WRITABLE):
        raise FastsegError(f"{location}: sets are read from http(s):// URLs, not written there; write to a folder, "
                           "s3://, gs:// or az://")


# --- the stores ---------------------------------------------------------------------------------------------------
def settings() -> dict[str, str]:
    """The object stores' environment of this process (endpoints, profiles, credentials), to hand to loader
    workers; kept in memory only."""
    return {k: v for k, v in os.environ.items() if k.startswith(SETTINGS_PREFIXES)}


def use_settings(environment: dict[str, str]) -> None:
    if environment and any(os.environ.get(k) != v for k, v in environment.items()):
        os.environ.update(environment)


_stores = {}  # (process, settings, scheme, bucket, purpose, timeout) -> store


def store(url: str, purpose: str = "read"):
    """The obstore store of a URL's bucket, one per process, settings and purpose ("read": ranged reads, no
    retries of its own (fetching.py retries and hedges them, the body too) and a READ_TIMEOUT bound; "other": listings, small reads,
    uploads and deletes, with the store's own retries and WRITE_TIMEOUT)."""
    scheme, bucket, _ = split_url(url)
    key = (os.getpid(), tuple(sorted(settings().items())), scheme, bucket, purpose, READ_TIMEOUT)
    if key not in _stores:
        try:
            from obstore.store import from_url
        except ImportError as err:  # pragma: no cover - depends on the install
            raise FastsegError(f"{url}: object stores need obstore: pip install obstore") from err
        reading = purpose == "read"
        client = {"timeout": timedelta(seconds=READ_TIMEOUT if reading else WRITE_TIMEOUT),
                  "connect_timeout": timedelta(seconds=5), "allow_http": _allow_http(scheme)}
        retry = {"max_retries": 0 if reading else 3, "retry_timeout": timedelta(seconds=60)}
        options = dict(client_options=client, retry_config=retry)
        if scheme == "s3":
            options.update(_s3_options())
        with errors(url):
            _stores[key] = from_url(f"{scheme}://{bucket}", **options)
        note_native_threads()  # obstore's runtime threads: a fork from now on would copy none of them
    return _stores[key]


def _allow_http(scheme: str) -> bool:
    """Plain http only where the user chose it: an http:// URL, an http:// endpoint of that store's, or Azurite."""
    if scheme == "az":
        return os.environ.get("AZURE_STORAGE_USE_EMULATOR", "").lower() in ("1", "true")
    if scheme == "s3":
        return (s3_endpoint() or "").startswith("http://")
    return scheme == "http" or os.environ.get("GOOGLE_BASE_URL", "").startswith("http://")


_S3_ENDPOINTS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")


def s3_endpoint() -> str | None:
    """The S3-compatible endpoint to send requests to, as boto3 resolves it: the environment (AWS_ENDPOINT_URL_S3,
    AWS_ENDPOINT_URL), else the profile's `endpoint_url` (or its `services` section's s3 one) in the AWS config
    file; None: AWS itself."""
    for name in _S3_ENDPOINTS:
        if os.environ.get(name):
            return os.environ[name]
    return _boto3_setup()[0]


def _boto3_setup() -> tuple[str | None, object | None]:
    """(the endpoint of the profile's S3 client where it is not AWS's own, the boto3 session), once per process and
    settings; (None, None) without boto3."""
    key = (os.getpid(), tuple(sorted(settings().items())))
    if key not in _boto3_sessions:
        try:
            import boto3
        except ImportError:
            _boto3_sessions[key] = (None, None)
            return _boto3_sessions[key]
        from botocore.exceptions import BotoCoreError

        try:
            session = boto3.session.Session()
            client = session.client("s3", region_name=session.region_name or "us-east-1")
        except BotoCoreError as err:  # a profile that is not there, a config file that does not parse
            raise FastsegError(f"the AWS settings do not load ({err}); check AWS_PROFILE and the AWS config files")\
                from None
        url = client.meta.endpoint_url
        _boto3_sessions[key] = (None if re.search(r"\.amazonaws\.com(\.cn)?/?$", url) else url, session)
    return _boto3_sessions[key]


_boto3_sessions = {}


def _s3_options() -> dict:
    """The endpoint and region as boto3 resolves them (a profile's `endpoint_url` and `region` in ~/.aws/config
    included), and where the environment holds no keys, boto3's credential chain (profiles, SSO, config files,
    roles); obstore reads the environment and instance roles itself."""
    options = {}
    if not any(os.environ.get(name) for name in _S3_ENDPOINTS) and s3_endpoint():
        options["endpoint"] = s3_endpoint()
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
            options["region"] = "us-east-1"
        return options
    session = _boto3_setup()[1]
    if session is None:
        return options
    from obstore.auth.boto3 import Boto3CredentialProvider

    options["region"] = session.region_name or "us-east-1"
    if session.get_credentials() is not None:
        options["credential_provider"] = Boto3CredentialProvider(session)
    return options


def endpoint(url: str) -> str:
    scheme = split_url(url)[0]
    return {"s3": s3_endpoint() or "AWS S3", "gs": os.environ.get("GOOGLE_BASE_URL") or "GCS",
            "az": os.environ.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000") if _allow_http("az") else
            "Azure Blob Storage"}.get(scheme, url)


def _fix(url: str) -> str:
    """Where the credentials of a URL's store come from, for an error message."""
    return {"s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the instance role",
            "gs": "GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, or the workload identity",
            "az": "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or a SAS token, or the managed identity"
            }.get(split_url(url)[0], "the URL")


@contextmanager
def errors(url: str, missing: str | None = None):
    """Turn a store's exceptions into one line naming `url` and the fix; `missing` is the message for an object
    that is not there (None: say so plainly)."""
    from obstore import exceptions as ox

    try:
        yield
    except FastsegError:
        raise
    except (ox.NotFoundError, FileNotFoundError) as err:  # obstore raises the builtin for a missing object
        if _no_bucket(err):
            raise FastsegError(_no_bucket_message(url)) from None
        raise FastsegError(missing or f"{url}: not found") from None
    except (ox.PermissionDeniedError, ox.UnauthenticatedError, PermissionError) as err:
        raise FastsegError(f"{url}: access denied ({_first_line(err)[:200]}); check the credentials ({_fix(url)}) "
                           "and the bucket's permissions") from None
    except ox.BaseError as err:
        text = str(err)
        if _no_bucket(err):
            raise FastsegError(_no_bucket_message(url)) from None
        if re.search(r"credential|InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|AuthorizationFailure|"
                     r"status code: 40[13]", text, re.IGNORECASE):
            raise FastsegError(f"{url}: access denied ({_first_line(err)[:200]}); check the credentials "
                               f"({_fix(url)}) and the bucket's permissions") from None
        if re.search(r"error sending request|connect|timed out|dns error|Connection refused", text, re.IGNORECASE):
            raise FastsegError(f"{url}: cannot reach {endpoint(url)} ({_first_line(err)[:200]}); check the endpoint "
                               "setting and the network") from None
        raise FastsegError(f"{url}: the request to {endpoint(url)} failed ({_first_line(err)[:300]}); check the URL, "
                           "the endpoint and the network") from None
    except (ValueError, OSError) as err:  # a URL or configuration obstore refuses
        raise FastsegError(f"{url}: {err}; check the URL and the store's settings") from None


def _no_bucket(err: Exception) -> bool:
    return bool(re.search(r"NoSuchBucket|ContainerNotFound|bucket does not exist|The specified bucket", str(err)))


def _no_bucket_message(url: str) -> str:
    scheme, bucket, _ = split_url(url)
    return f"{url}: no bucket {bucket!r} at {endpoint(url)}; create it, or fix the URL or the endpoint"


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


# --- reading ------------------------------------------------------------------------------------------------------
def read(where, missing: str | None = None) -> bytes:
    """A whole file or object."""
    if not is_remote(where):
        try:
            return Path(where).read_bytes()
        except FileNotFoundError:
            raise FastsegError(missing or f"{where}: no such file") from None
    import obstore

    with errors(str(where), missing):
        return bytes(obstore.get(store(where, "other"), split_url(where)[2]).bytes())


def transient(err: Exception) -> bool:
    """A failure worth one more try: a timeout, a connection reset or cut short, a server error or throttling; not
    a missing object, a refused access or a bad request."""
    from obstore import exceptions as ox

    if isinstance(err, (ox.NotFoundError, ox.PermissionDeniedError, ox.UnauthenticatedError, ox.NotSupportedError,
                        ox.InvalidPathError, ox.UnknownConfigurationKeyError, FileNotFoundError, PermissionError)):
        return False
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    text = str(err)
    refused = re.search(r"status code: 4\d\d\b|InvalidAccessKeyId|SignatureDoesNotMatch", text)
    throttled = re.search(r"\b(408|429)\b|SlowDown|Throttl|RequestTimeout", text)
    if _no_bucket(err) or (refused and not throttled):
        return False
    return isinstance(err, ox.BaseError)


def sizes(root, missing: str | None = None) -> dict[str, int]:
    """Name -> size of the files directly in a folder, or the objects directly under a prefix (one listing). A
    folder that is not there is a FastsegError (`missing`, or a plain one); a prefix with nothing under it is empty."""
    if not is_remote(root):
        folder = Path(root)
        if not folder.is_dir():
            raise FastsegError(missing or f"{folder}: no such folder")
        return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    import obstore

    prefix = split_url(root)[2].rstrip("/")
    with errors(str(root)):
        listed = obstore.list_with_delimiter(store(root, "other"), prefix + "/" if prefix else None)
    cut = len(prefix) + 1 if prefix else 0
    return {item["path"][cut:]: item["size"] for item in listed["objects"]}


def cached(where, path: Path, missing: str | None = None) -> Path:
    """A local file holding `where`: the file itself on disk; for an object, a copy at `path`, downloaded the first
    time (written beside and renamed, so a cached copy is always whole)."""
    if not is_remote(where):
        return Path(where)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        download(str(where), path, missing)
    return path


@contextmanager
def local_copies(root, names_wanted: list[str], present: dict[str, int]):
    """A local folder holding the files `names_wanted` of `root`: the folder itself on disk; for a prefix, a
    temporary folder those of them `present` (root's listing) lists are downloaded into, removed afterwards."""
    if not is_remote(root):
        yield Path(root)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fastseg-") as tmp:
        for name in names_wanted:
            if name in present:
                download(join(root, name), Path(tmp) / name)
        yield Path(tmp)


def names(root) -> list[str]:
    return sorted(sizes(root))


def check_bucket(url: str) -> None:
    """That the bucket (or container) of `url` is there and answers: one listing, failing within seconds."""
    sizes(url)


def ensure_folder(root) -> None:
    """A place to write into: a folder made where it is missing; a bucket checked to be there and to answer (a
    prefix needs no making)."""
    check_writable(root)
    if is_remote(root):
        check_bucket(str(root))
    else:
        Path(root).mkdir(parents=True, exist_ok=True)


# --- writing ------------------------------------------------------------------------------------------------------
def upload(path: Path, url: str) -> None:
    """A local file to an object (multipart where it is large)."""
    import obstore

    check_writable(url)
    with errors(url):
        obstore.put(store(url, "other"), split_url(url)[2], Path(path))


def download(url: str, path: Path, missing: str | None = None) -> None:
    """An object to a local file, written beside and renamed (a download cut short leaves no file); `missing`: the
    message where the object is not there (by default: a file of a shard set)."""
    import obstore

    tmp = atomic.partial_path(Path(path))
    with errors(url, missing or f"{url}: listed in the manifest but missing from the bucket; re-shard or restore it"):
        result = obstore.get(store(url, "other"), split_url(url)[2])
        with open(tmp, "wb") as f:
            for chunk in result:
                f.write(chunk)
    os.replace(tmp, path)


def put_file(path: Path, where) -> None:
    """A finished local file to `where` whole or not at all: on disk copied beside it and renamed, to a store
    uploaded (an object appears only once its upload completes)."""
    if is_remote(where):
        upload(path, str(where))
        return
    atomic.copy_into_place(path, Path(where))


def write_bytes(where, data: bytes) -> None:
    """Small data (a manifest, a record) to `where`, whole or not at all."""
    if is_remote(where):
        import obstore

        check_writable(where)
        with errors(str(where)):
            obstore.put(store(where, "other"), split_url(where)[2], data)
        return
    atomic.write_into_place(Path(where), data)


def delete(root, names_to_delete: list[str]) -> None:
    """Files in a folder, or objects under a prefix, by name; names already gone are fine."""
    if not names_to_delete:
        return
    if not is_remote(root):
        for name in names_to_delete:
            Path(root, name).unlink(missing_ok=True)
        return
    import obstore

    check_writable(root)
    prefix = split_url(root)[2].rstrip("/")
    keys = [f"{prefix}/{name}" if prefix else name for name in names_to_delete]
    with errors(root):
        obstore.delete(store(root, "other"), keys)
