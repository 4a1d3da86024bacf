"""Blob storage for documents: content-addressed files in a local directory or an S3-compatible
bucket (AWS S3, MinIO, Cloudflare R2, …).

A blob's key is derived from its SHA-256 (`sha256/ab/cd/abcd…`): the same bytes are stored once,
storing them again is a no-op, and a stored blob never changes. Every method blocks on disk or
network: call them from a worker thread (a plain `def` endpoint, `anyio.to_thread.run_sync`),
never on the event loop.

Nothing here touches the network or the disk at import or when the store is built; boto3 is
imported on the first S3 operation. An S3 service that cannot be reached (or refuses our
credentials) raises `StorageUnavailable`, a 503 `feature_unavailable` in the error envelope, and
/health reports the last such failure without contacting the service itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Protocol, TypeVar

from fastapi import Depends, Request
from pydantic import SecretStr

from a3e.core.errors import FeatureUnavailable, NotFound

if TYPE_CHECKING:
    from fastapi import FastAPI

    from a3e.core.settings import Settings

FEATURE_NAME = "storage"
FEATURE_TITLE = "Document storage"
CHUNK_SIZE = 256 * 1024
MIB = 1024 * 1024
# S3 uploads above this size go in parts of this size (S3's minimum part is 5 MiB).
MULTIPART_THRESHOLD = 8 * MIB
# /doctor and health(): a bucket that has not answered by then counts as unreachable.
HEALTH_TIMEOUT = 3.0

_SHA256 = re.compile(r"[0-9a-f]{64}")

T = TypeVar("T")


class BlobNotFound(NotFound):
    code = "blob_not_found"


class StorageUnavailable(FeatureUnavailable):
    """The storage service cannot be used right now (unreachable, refusing us, or out of space)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"{FEATURE_TITLE} is unavailable: {reason}",
            details={"feature": FEATURE_NAME, "status": "failed"},
            headers={"Retry-After": "30"},
        )
        self.reason = reason


def blob_key(sha256: str) -> str:
    """`sha256/ab/cd/abcd…`: two levels of fan-out keep directory listings short."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        # Also what keeps a caller's string from naming a path outside the store.
        raise ValueError("a blob is named by its SHA-256 as 64 lowercase hexadecimal digits")
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


class BlobStore(Protocol):
    """What the rest of A³E may do with stored files."""

    kind: str

    def put_file(self, sha256: str, path: Path, content_type: str) -> None:
        """Store the file's bytes under their SHA-256; a no-op when they are already stored."""

    def open_stream(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The blob's bytes in chunks (for StreamingResponse); raises BlobNotFound before any."""

    def download_to(self, sha256: str, path: Path) -> None:
        """Copy the blob to a local file (for extraction); raises BlobNotFound."""

    def exists(self, sha256: str) -> bool: ...

    def delete(self, sha256: str) -> None:
        """Remove the blob; a no-op when it is not there."""

    def health(self, timeout: float = HEALTH_TIMEOUT) -> tuple[bool, str]:
        """An active check for `a3e doctor`: may contact the service and write a probe file."""

    def known_problem(self) -> str | None:
        """What is known to be wrong, without contacting the service or writing (for /health)."""

    def describe(self) -> str: ...


def _human(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _copy_hashing(source: BinaryIO, target: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK_SIZE):
        digest.update(chunk)
        target.write(chunk)
    return digest.hexdigest()


def _iter_file(handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


class LocalBlobStore:
    """Blobs as files under `root` (by default $A3E_DATA_DIR/blobs). The declared content type is
    not kept: the database row that names a blob keeps it."""

    kind = "local"

    def __init__(self, root: Path, *, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes

    def describe(self) -> str:
        return f"local directory {self.root}"

    def path_for(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def put_file(self, sha256: str, path: Path, content_type: str) -> None:
        target = self.path_for(sha256)
        if target.is_file():
            return
        with open(path, "rb") as source:  # a missing source is the caller's bug, not an outage
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                # Written under a private name in the same directory, then renamed: readers see the
                # whole file or nothing, and two writers of the same blob both end with it whole.
                fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            except OSError as exc:
                raise StorageUnavailable(f"cannot write to {self.root} ({exc.strerror or exc})") from exc
            try:
                with os.fdopen(fd, "wb") as out:
                    actual = _copy_hashing(source, out)
                    out.flush()
                    os.fsync(out.fileno())
                if actual != sha256:
                    raise ValueError(f"the content of {path.name} does not match the SHA-256 it was stored under")
                os.replace(temporary, target)
                _fsync_directory(target.parent)
            except OSError as exc:
                Path(temporary).unlink(missing_ok=True)
                raise StorageUnavailable(f"cannot write to {self.root} ({exc.strerror or exc})") from exc
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise

    def open_stream(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        try:
            handle = open(self.path_for(sha256), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"Blob {sha256} is not in storage") from None
        return _iter_file(handle, chunk_size)

    def download_to(self, sha256: str, path: Path) -> None:
        try:
            shutil.copyfile(self.path_for(sha256), path)
        except FileNotFoundError:
            if not self.path_for(sha256).exists():
                raise BlobNotFound(f"Blob {sha256} is not in storage") from None
            raise

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def health(self, timeout: float = HEALTH_TIMEOUT) -> tuple[bool, str]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".health-") as probe:
                probe.write(b"ok")
                probe.flush()
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            return False, f"{self.root} is not writable ({exc.strerror or exc})"
        if free < self.min_free_bytes:
            return False, self._low_space(free)
        return True, f"{self.root} is writable, {_human(free)} free"

    def known_problem(self) -> str | None:
        # Without writing: the nearest existing directory must be writable and have room.
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} is not writable by the service"
        try:
            free = shutil.disk_usage(existing).free
        except OSError as exc:
            return f"cannot read the free space of {existing} ({exc.strerror or exc})"
        return self._low_space(free) if free < self.min_free_bytes else None

    def _low_space(self, free: int) -> str:
        return f"only {_human(free)} free under {self.root} (at least {_human(self.min_free_bytes)} needed)"


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (a crash right after could otherwise lose it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class S3BlobStore:
    """Blobs as objects in an S3-compatible bucket, under an optional key prefix."""

    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        access_key_id: str,
        secret_access_key: SecretStr,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        prefix: str = "",
        addressing_style: str = "auto",
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        multipart_threshold: int = MULTIPART_THRESHOLD,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.prefix = prefix.strip("/")
        self.addressing_style = addressing_style
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.multipart_threshold = multipart_threshold
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        # The last outage an operation ran into, and when; cleared by the next success.
        self._problem: str | None = None

    def __repr__(self) -> str:  # never the credentials
        return f"S3BlobStore({self.describe()})"

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else f" in {self.region}"
        return f"s3 bucket {self.bucket}{'/' + self.prefix if self.prefix else ''}{where}"

    def key_for(self, sha256: str) -> str:
        key = blob_key(sha256)
        return f"{self.prefix}/{key}" if self.prefix else key

    # ---- clients ---------------------------------------------------------------------------

    def _client(self, *, quick_timeout: float | None = None) -> Any:
        """The boto3 client, built on first use (boto3 is imported here, never at start).
        `quick_timeout` gives a separate client with short timeouts and no retries, for health."""
        name = "main" if quick_timeout is None else f"quick-{quick_timeout}"
        client = self._clients.get(name)
        if client is not None:
            return client
        with self._lock:
            if name not in self._clients:
                self._clients[name] = self._build_client(quick_timeout)
            return self._clients[name]

    def _build_client(self, quick_timeout: float | None) -> Any:
        import boto3
        from botocore.config import Config

        if quick_timeout is None:
            timeouts = {"connect_timeout": self.connect_timeout, "read_timeout": self.read_timeout}
            attempts = self.max_attempts
        else:
            timeouts = {"connect_timeout": quick_timeout, "read_timeout": quick_timeout}
            attempts = 1
        config = Config(
            **timeouts,
            retries={"max_attempts": attempts, "mode": "standard"},
            s3={"addressing_style": self.addressing_style},
            # Only our settings say where the service is; no AWS_ENDPOINT_URL* from elsewhere.
            ignore_configured_endpoint_urls=True,
            # The default CRC checksums of newer botocore are refused by several S3-compatible
            # services; send them only where S3 itself requires one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=self._access_key_id,
            aws_secret_access_key=self._secret_access_key.get_secret_value(),
            region_name=self.region,
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def _call(self, operation: Callable[[Any], T], *, sha256: str | None = None) -> T:
        """Run one operation; outages become StorageUnavailable (and are remembered for /health)."""
        try:
            result = operation(self._client())
        except Exception as exc:
            if sha256 is not None and _is_missing_key(exc):
                raise BlobNotFound(f"Blob {sha256} is not in storage") from None
            reason = self._unavailable_reason(exc)
            if reason is None:
                raise
            self._remember(reason)
            raise StorageUnavailable(reason) from exc
        self._problem = None
        return result

    def _unavailable_reason(self, exc: BaseException) -> str | None:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        cause = exc
        # boto3's transfer manager wraps the service's error in S3UploadFailedError.
        while not isinstance(cause, (ClientError, BotoCoreError)) and cause.__cause__ is not None:
            cause = cause.__cause__
        where = self.endpoint_url or f"S3 in {self.region}"
        if isinstance(cause, ClientError):
            error = cause.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code == "NoSuchBucket":
                return f"the bucket {self.bucket} does not exist at {where}"
            if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return (
                    f"{where} refused our credentials for bucket {self.bucket} ({code or status}); "
                    "check A3E_S3_ACCESS_KEY_ID and A3E_S3_SECRET_ACCESS_KEY"
                )
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                return f"{where} answered {status or ''} {code}".strip()
            return None
        if isinstance(cause, (EndpointConnectionError, ConnectTimeoutError)):
            return f"cannot reach {where}"
        if isinstance(cause, ReadTimeoutError):
            return f"{where} did not answer within {self.read_timeout:g} s"
        if isinstance(cause, BotoCoreError):
            return f"{where}: {cause.__class__.__name__}"
        if isinstance(cause, OSError):
            return f"{where}: {cause.__class__.__name__}"
        return None

    # ---- operations ------------------------------------------------------------------------

    def put_file(self, sha256: str, path: Path, content_type: str) -> None:
        if self.exists(sha256):
            return
        key = self.key_for(sha256)
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_threshold,
            max_concurrency=4,
        )
        extra = {"ContentType": content_type or "application/octet-stream", "Metadata": {"sha256": sha256}}
        self._call(lambda client: client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=transfer))

    def open_stream(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        key = self.key_for(sha256)
        response = self._call(lambda client: client.get_object(Bucket=self.bucket, Key=key), sha256=sha256)
        return self._iter_body(response["Body"], chunk_size)

    def _iter_body(self, body: Any, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(chunk_size)
        except Exception as exc:
            reason = self._unavailable_reason(exc)
            if reason is None:
                raise
            self._remember(reason)
            raise StorageUnavailable(reason) from exc
        finally:
            body.close()

    def download_to(self, sha256: str, path: Path) -> None:
        key = self.key_for(sha256)
        self._call(lambda client: client.download_file(self.bucket, key, str(path)), sha256=sha256)

    def exists(self, sha256: str) -> bool:
        key = self.key_for(sha256)
        try:
            self._call(lambda client: client.head_object(Bucket=self.bucket, Key=key), sha256=sha256)
        except BlobNotFound:
            return False
        return True

    def delete(self, sha256: str) -> None:
        key = self.key_for(sha256)  # S3 answers 204 for a key that is not there: idempotent
        self._call(lambda client: client.delete_object(Bucket=self.bucket, Key=key))

    def health(self, timeout: float = HEALTH_TIMEOUT) -> tuple[bool, str]:
        started = time.perf_counter()
        try:
            self._client(quick_timeout=timeout).head_bucket(Bucket=self.bucket)
        except Exception as exc:
            reason = self._unavailable_reason(exc)
            if reason is None:
                if _is_missing_key(exc):  # HEAD has no body: a missing bucket is a bare 404
                    reason = f"the bucket {self.bucket} does not exist at {self.endpoint_url or 'S3'}"
                else:
                    reason = f"{exc.__class__.__name__} from {self.endpoint_url or 'S3'}"
            self._remember(reason)
            return False, reason
        self._problem = None
        return True, f"bucket {self.bucket} answers ({(time.perf_counter() - started) * 1000:.0f} ms)"

    def _remember(self, reason: str) -> None:
        self._problem = f"{reason} (last failure at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC)"

    def known_problem(self) -> str | None:
        return self._problem


def _is_missing_key(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


def blob_store_from_settings(settings: Settings) -> BlobStore:
    """The configured store; builds no client and makes no connection."""
    if settings.storage == "s3":
        if not (settings.s3_bucket and settings.s3_access_key_id and settings.s3_secret_access_key):
            raise ValueError("A3E_STORAGE=s3 needs A3E_S3_BUCKET, A3E_S3_ACCESS_KEY_ID and A3E_S3_SECRET_ACCESS_KEY")
        return S3BlobStore(
            bucket=settings.s3_bucket,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            prefix=settings.s3_prefix,
            addressing_style=settings.s3_addressing_style,
            connect_timeout=settings.s3_connect_timeout,
            read_timeout=settings.s3_read_timeout,
            max_attempts=settings.s3_max_attempts,
        )
    # Room for at least one more upload of the largest size allowed.
    return LocalBlobStore(settings.data_dir / "blobs", min_free_bytes=settings.max_upload_mb * MIB)


# ---- the optional feature ------------------------------------------------------------------


def init_storage(app: FastAPI, settings: Settings) -> None:
    """Feature initialiser: builds the store (no connection); the feature fails if boto3 is missing."""
    if settings.storage == "s3":
        import importlib.util

        if importlib.util.find_spec("boto3") is None:  # finds it without importing it
            raise RuntimeError("A3E_STORAGE=s3 needs the boto3 package, which is not installed")
    app.state.blob_store = blob_store_from_settings(settings)


def storage_problem(app: FastAPI) -> str | None:
    """Feature health for /health: what the store knows, without contacting the service."""
    store: BlobStore | None = getattr(app.state, "blob_store", None)
    if store is None:
        return "the store was not started"
    return store.known_problem()


def get_blob_store(request: Request) -> BlobStore:
    """Dependency for routes that read or write documents: 503 when storage is not running."""
    statuses = getattr(request.app.state, "features", {})
    status = statuses.get(FEATURE_NAME)
    store = getattr(request.app.state, "blob_store", None)
    if status is None or not status.available or store is None:
        state = status.state.value if status is not None else "not_configured"
        reason = status.reason if status is not None and status.reason else "not set up in this deployment"
        raise FeatureUnavailable(
            f"{FEATURE_TITLE} is unavailable: {reason}", details={"feature": FEATURE_NAME, "status": state}
        )
    return store


BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]
