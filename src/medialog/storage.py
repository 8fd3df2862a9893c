"""S3 access (boto3, run off the event loop). Two clients: one for server-side calls, one whose
endpoint is the public one, used only to presign URLs that clients will call."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from medialog.config import Settings


@dataclass(frozen=True, kw_only=True)
class ObjectHead:
    size: int
    content_type: str
    etag: str
    last_modified: datetime


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
    """The buckets of DESIGN.md "Storage layout"."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._s3 = _client(settings, settings.s3_endpoint)
        self._presigner = _client(settings, settings.presign_endpoint)

    def presign_put(self, bucket: str, key: str, *, content_type: str, size_bytes: int,
                    expires_in: int) -> str:
        """A PUT URL that signs the Content-Type and the Content-Length: a client must send
        exactly that header and exactly ``size_bytes`` bytes (S3 answers 403
        SignatureDoesNotMatch to another size, SeaweedFS included; a chunked body, which has no
        Content-Length, is refused the same way)."""
        url: str = self._presigner.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": key, "ContentType": content_type,
                    "ContentLength": size_bytes},
            ExpiresIn=expires_in,
            HttpMethod="PUT",
        )
        return url

    def presign_get(
        self, bucket: str, key: str, *, expires_in: int, filename: str | None = None
    ) -> str:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url: str = self._presigner.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in
        )
        return url

    async def head(self, bucket: str, key: str) -> ObjectHead | None:
        """The object's metadata, or None when there is no such key. Any other failure (403,
        5xx, unreachable) is raised as botocore's own error: the stream workers tell transient
        from permanent failures by it, and the api maps it to 503 (``api/stream.py``)."""
        try:
            r = await asyncio.to_thread(self._s3.head_object, Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return ObjectHead(
            size=int(r["ContentLength"]),
            content_type=str(r.get("ContentType", "")),
            etag=str(r.get("ETag", "")).strip('"'),
            last_modified=r["LastModified"],
        )

    async def check(self) -> None:
        """Raise unless every configured bucket answers."""
        for bucket in (
            self.settings.bucket_staging,
            self.settings.bucket_masters,
            self.settings.bucket_previews,
        ):
            await asyncio.to_thread(self._s3.head_bucket, Bucket=bucket)

    @property
    def client(self) -> BaseClient:
        return self._s3
