"""``BlobStore``: the S3 requests each operation makes, and driver failures as domain errors.
The driver is a recording stand-in for the boto3 client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from medialog.config import Settings
from medialog.domain.errors import Conflict, NotFound, Unavailable
from medialog.storage import BlobStore


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "no"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


class FakeS3:
    """Answers each call with the next of ``answers`` (raised when it is an exception)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return call


def store(monkeypatch: pytest.MonkeyPatch, s3: FakeS3) -> BlobStore:
    monkeypatch.setattr("medialog.storage.boto3.client", lambda *_, **__: s3)
    return BlobStore(Settings())


async def test_head_reads_the_metadata_and_a_missing_object_is_none(monkeypatch) -> None:
    s3 = FakeS3({"ContentLength": 5, "ContentType": "video/mp4", "ETag": '"e1"',
                 "LastModified": "t", "Metadata": {"source-etag": "e0"}},
                client_error(404, "404"))
    blobs = store(monkeypatch, s3)
    head = await blobs.head("b", "k")
    assert head is not None and (head.size, head.etag, head.metadata) == (5, "e1",
                                                                          {"source-etag": "e0"})
    assert await blobs.head("b", "gone") is None
    assert s3.calls[1] == ("head_object", (), {"Bucket": "b", "Key": "gone"})


async def test_a_range_is_read_only_from_the_object_it_was_asked_of(monkeypatch) -> None:
    class Body:
        def __init__(self) -> None:
            self.chunks = [b"ab", ReadTimeoutError(endpoint_url="http://s3.invalid")]

        def read(self, _size: int) -> bytes:
            chunk = self.chunks.pop(0)
            if isinstance(chunk, Exception):
                raise chunk
            return chunk

        def close(self) -> None:
            self.chunks = []

    s3 = FakeS3({"Body": Body()}, client_error(412, "PreconditionFailed"),
                client_error(404, "NoSuchKey"))
    blobs = store(monkeypatch, s3)
    body = await blobs.get_range("b", "k", 2, 3, etag="e1")
    assert s3.calls[0][2] == {"Bucket": "b", "Key": "k", "Range": "bytes=2-3", "IfMatch": '"e1"'}
    assert await body.read(10) == b"ab"
    with pytest.raises(Unavailable):  # the connection failing mid-body
        await body.read(10)
    await body.close()
    with pytest.raises(Conflict) as changed:
        await blobs.get_range("b", "k", 0, 1, etag="e1")
    assert changed.value.code == "PRECONDITION_FAILED"
    with pytest.raises(NotFound):
        await blobs.get_range("b", "k", 0, 1, etag="e1")


async def test_a_copy_is_conditional_on_both_ends(monkeypatch) -> None:
    s3 = FakeS3({}, client_error(412, "PreconditionFailed"))
    blobs = store(monkeypatch, s3)
    await blobs.copy_if_absent("staging", "s", "masters", "m", src_etag="e1",
                               content_type="video/mp4", metadata={"asset-id": "a"})
    assert s3.calls[0] == ("copy_object", (), {
        "CopySource": {"Bucket": "staging", "Key": "s"}, "CopySourceIfMatch": '"e1"',
        "IfNoneMatch": "*", "Bucket": "masters", "Key": "m", "MetadataDirective": "REPLACE",
        "ContentType": "video/mp4", "Metadata": {"asset-id": "a"}})
    with pytest.raises(Conflict):
        await blobs.copy_if_absent("staging", "s", "masters", "m", src_etag="e1",
                                   content_type="video/mp4", metadata={})


@pytest.mark.parametrize("exc", [
    client_error(403, "AccessDenied"), client_error(500, "InternalError"),
    client_error(503, "SlowDown"), EndpointConnectionError(endpoint_url="http://s3.invalid"),
    S3UploadFailedError("Failed to upload to http://s3.invalid/b/k"),
])
async def test_any_other_failure_is_the_store_unavailable(monkeypatch, exc: Exception) -> None:
    blobs = store(monkeypatch, FakeS3(exc))
    with pytest.raises(Unavailable) as failed:
        await blobs.upload_file(Path("/tmp/f"), "b", "k", content_type="image/jpeg")
    assert failed.value.code == "STORE_UNAVAILABLE"
    assert "s3.invalid" not in failed.value.message
    assert failed.value.__cause__ is exc


async def test_files_move_with_their_content_type(monkeypatch) -> None:
    s3 = FakeS3(None, None)
    blobs = store(monkeypatch, s3)
    await blobs.upload_file(Path("/w/thumb.jpg"), "previews", "a/thumb.jpg",
                            content_type="image/jpeg")
    await blobs.download_file("masters", "a/original.mp4", Path("/w/source.mp4"))
    assert s3.calls == [
        ("upload_file", ("/w/thumb.jpg", "previews", "a/thumb.jpg"),
         {"ExtraArgs": {"ContentType": "image/jpeg"}}),
        ("download_file", ("masters", "a/original.mp4", "/w/source.mp4"), {})]


async def test_a_prefix_is_deleted_a_page_at_a_time(monkeypatch) -> None:
    s3 = FakeS3({"Contents": [{"Key": "a/1"}, {"Key": "a/2"}]}, {},
                {"Contents": [{"Key": "a/3"}]}, {}, {})
    blobs = store(monkeypatch, s3)
    assert await blobs.delete_prefix("previews", "a/") == 3
    assert [c[0] for c in s3.calls] == ["list_objects_v2", "delete_objects"] * 2 + [
        "list_objects_v2"]
    assert s3.calls[1][2]["Delete"] == {"Objects": [{"Key": "a/1"}, {"Key": "a/2"}],
                                        "Quiet": True}


async def test_keys_a_deletion_could_not_remove_are_the_store_unavailable(monkeypatch) -> None:
    s3 = FakeS3({"Contents": [{"Key": "a/1"}]}, {"Errors": [{"Key": "a/1", "Code": "x"}]})
    with pytest.raises(Unavailable):
        await store(monkeypatch, s3).delete_prefix("previews", "a/")
