"""S3 behind a port: the object operations the roles need, each run off the event loop (boto3
blocks), and each failure raised as the domain's error, so that no caller depends on the driver.
Two clients: one for server-side calls, one whose endpoint is the public one, used only to
presign URLs that clients will call. Keys come from ``medialog.domain.layout``.

Errors: a missing object is ``NotFound`` (``NOT_FOUND``); a condition that does not hold
(``If-Match``, ``If-None-Match``) is ``Conflict`` ``PRECONDITION_FAILED``; anything else (denied,
a server error, unreachable, timed out) is ``Unavailable`` ``STORE_UNAVAILABLE``, which the
workers wait out and the api answers with 503. Messages never name the endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.exceptions import Boto3Error
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from medialog.config import Settings
from medialog.domain.errors import Conflict, MedialogError, NotFound, Unavailable

T = TypeVar("T")
PRECONDITION_FAILED = "PRECONDITION_FAILED"
STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
_MISSING = {"404", "NoSuchKey", "NotFound"}
_CHANGED = {"412", "PreconditionFailed"}
_DELETE_PAGE = 1000  # the most keys one DeleteObjects takes


@dataclass(frozen=True, kw_only=True)
class ObjectHead:
    """What a HEAD says about an object."""

    size: int
    content_type: str
    etag: str
    last_modified: datetime
    metadata: dict[str, str]  # the user metadata (x-amz-meta-*)


def _store_error(exc: Exception, operation: str) -> MedialogError:
    """The domain's error for a driver failure of ``operation`` (module docstring)."""
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if status == 404 or code in _MISSING:
            return NotFound("no such object")
        if status == 412 or code in _CHANGED:
            return Conflict(f"{operation}: a condition on the object does not hold",
                            code=PRECONDITION_FAILED)
        what = f"{code} (HTTP {status})"
    else:
        what = type(exc).__name__  # its text names the endpoint
    return Unavailable(f"the object store failed ({operation}): {what}", code=STORE_UNAVAILABLE)


async def _off_loop(operation: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call`` in a thread (boto3 blocks), its driver failures as the domain's errors."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise _store_error(exc, operation) from exc


class ObjectBody:
    """A GET's body, read in chunks off the event loop; ``close`` it when done."""

    def __init__(self, body: Any) -> None:
        self._body = body

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end."""
        chunk: bytes = await _off_loop("GetObject", self._body.read, size)
        return chunk

    async def close(self) -> None:
        await asyncio.to_thread(self._body.close)


def _client(settings: Settings, endpoint: str) -> BaseClient:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key.get_secret_value() or None,
        aws_secret_access_key=settings.s3_secret_key.get_secret_value() or None,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=32,
        ),
    )


class BlobStore:
    """The buckets of the storage layout (``medialog.domain.layout``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._s3 = _client(settings, settings.s3_endpoint)
        self._presigner = _client(settings, settings.presign_endpoint)

    async def presign_put(self, bucket: str, key: str, *, content_type: str, size_bytes: int,
                          expires_in: int) -> str:
        """A PUT URL that signs the Content-Type and the Content-Length: a client must send
        exactly that header and exactly ``size_bytes`` bytes (S3 answers 403
        SignatureDoesNotMatch to another size, SeaweedFS included; a chunked body, which has no
        Content-Length, is refused the same way)."""
        params = {"Bucket": bucket, "Key": key, "ContentType": content_type,
                  "ContentLength": size_bytes}
        url: str = await _off_loop("presigning", self._presigner.generate_presigned_url,
                                   "put_object", Params=params, ExpiresIn=expires_in,
                                   HttpMethod="PUT")
        return url

    async def presign_get(
        self, bucket: str, key: str, *, expires_in: int, filename: str | None = None
    ) -> str:
        """A GET URL; with ``filename``, the answer is a download under that name."""
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url: str = await _off_loop("presigning", self._presigner.generate_presigned_url,
                                   "get_object", Params=params, ExpiresIn=expires_in)
        return url

    async def head(self, bucket: str, key: str) -> ObjectHead | None:
        """The object's metadata, or None when there is no such key."""
        try:
            r = await _off_loop("HeadObject", self._s3.head_object, Bucket=bucket, Key=key)
        except NotFound:
            return None
        return ObjectHead(
            size=int(r["ContentLength"]),
            content_type=str(r.get("ContentType", "")),
            etag=str(r.get("ETag", "")).strip('"'),
            last_modified=r["LastModified"],
            metadata=dict(r.get("Metadata", {})),
        )

    async def get_range(self, bucket: str, key: str, start: int, end: int, *,
                        etag: str) -> ObjectBody:
        """Bytes ``start`` … ``end`` (inclusive) of the object, only while its etag is ``etag``
        (``If-Match``): ``Conflict`` once it was replaced, ``NotFound`` once it is gone."""
        r = await _off_loop("GetObject", self._s3.get_object, Bucket=bucket, Key=key,
                            Range=f"bytes={start}-{end}", IfMatch=f'"{etag}"')
        return ObjectBody(r["Body"])

    async def copy_if_absent(self, src_bucket: str, src_key: str, bucket: str, key: str, *,
                             src_etag: str, content_type: str,
                             metadata: dict[str, str]) -> None:
        """Copy server side, with ``content_type`` and ``metadata`` replacing the source's, only
        from the source whose etag is ``src_etag`` (``If-Match``) and never over an existing
        object (``If-None-Match: *``): ``Conflict`` when either does not hold, ``NotFound``
        when there is no source. One request copies up to 5 GiB."""
        await _off_loop(
            "CopyObject", self._s3.copy_object,
            CopySource={"Bucket": src_bucket, "Key": src_key},
            CopySourceIfMatch=f'"{src_etag}"',
            IfNoneMatch="*",
            Bucket=bucket,
            Key=key,
            MetadataDirective="REPLACE",
            ContentType=content_type,
            Metadata=metadata,
        )

    async def upload_file(self, path: Path, bucket: str, key: str, *, content_type: str) -> None:
        """Store the local file at ``key`` (multipart when large), with its content type."""
        await _off_loop("upload", self._s3.upload_file, str(path), bucket, key,
                        ExtraArgs={"ContentType": content_type})

    async def download_file(self, bucket: str, key: str, path: Path) -> None:
        """Write the object to the local file ``path``."""
        await _off_loop("download", self._s3.download_file, bucket, key, str(path))

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the object; removing what is not there is no error."""
        await _off_loop("DeleteObject", self._s3.delete_object, Bucket=bucket, Key=key)

    async def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Remove every object under ``prefix``, a page at a time; how many were removed."""
        return await _off_loop("DeleteObjects", self._delete_prefix, bucket, prefix)

    def _delete_prefix(self, bucket: str, prefix: str) -> int:
        removed = 0
        while True:
            page = self._s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=_DELETE_PAGE)
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if not keys:
                return removed
            result = self._s3.delete_objects(Bucket=bucket,
                                             Delete={"Objects": keys, "Quiet": True})
            if result.get("Errors"):
                raise Unavailable(f"DeleteObjects in {bucket}: {result['Errors'][:3]}",
                                  code=STORE_UNAVAILABLE)
            removed += len(keys)

    async def check(self) -> None:
        """Raise unless every configured bucket answers."""
        for bucket in (
            self.settings.bucket_staging,
            self.settings.bucket_masters,
            self.settings.bucket_previews,
        ):
            await _off_loop("HeadBucket", self._s3.head_bucket, Bucket=bucket)


# -- CORS of the buckets (browsers PUT uploads and GET downloads through presigned URLs) --------

UPLOAD_METHODS = ("PUT",)
READ_METHODS = ("GET", "HEAD")
BUCKET_CORS_MAX_AGE_S = 600


def bucket_cors(origins: tuple[str, ...], methods: tuple[str, ...]) -> dict[str, Any]:
    """The ``CORSConfiguration`` letting pages at ``origins`` call a bucket's presigned URLs
    with ``methods``: any request header (a presigned PUT signs its Content-Type), and the
    headers a player or an uploader reads exposed."""
    return {"CORSRules": [{
        "AllowedOrigins": list(origins),
        "AllowedMethods": list(methods),
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag", "Content-Length", "Content-Range", "Accept-Ranges"],
        "MaxAgeSeconds": BUCKET_CORS_MAX_AGE_S,
    }]}


def bucket_cors_methods(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Bucket → the methods browsers use on it: uploads PUT to staging, downloads GET masters,
    and previews are GET too (the api streams them, a CDN may serve them straight)."""
    return {settings.bucket_staging: UPLOAD_METHODS, settings.bucket_masters: READ_METHODS,
            settings.bucket_previews: READ_METHODS}


def apply_bucket_cors(client: BaseClient, bucket: str, origins: tuple[str, ...],
                      methods: tuple[str, ...]) -> None:
    """Make ``bucket`` allow exactly ``origins`` (none: remove its CORS configuration), so the
    buckets follow ``Settings.cors_origins`` when it changes. Blocking (boto3): for start-up
    tools (``medialog dev``, the compose ``buckets`` service)."""
    if origins:
        client.put_bucket_cors(Bucket=bucket, CORSConfiguration=bucket_cors(origins, methods))
    else:
        client.delete_bucket_cors(Bucket=bucket)


def setup_buckets(settings: Settings) -> list[str]:
    """Create the buckets that are missing and give each its CORS (``apply_bucket_cors``);
    return the ones created. Blocking: for the compose ``buckets`` service (``medialog dev``
    does the same on its own S3)."""
    client, created = _client(settings, settings.s3_endpoint), []
    for bucket, methods in bucket_cors_methods(settings).items():
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError:
            client.create_bucket(Bucket=bucket)
            created.append(bucket)
        apply_bucket_cors(client, bucket, settings.cors_origin_list, methods)
    return created
