from datetime import UTC, datetime

import pytest

from medialog.domain.asset import Asset, AssetStatus, decide, fold
from medialog.domain.commands import RequestUpload
from medialog.domain.errors import Conflict
from medialog.domain.events import UploadRequested

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def request(asset_id="a1"):
    return RequestUpload(
        asset_id=asset_id, owner_id="u1", kind="video", filename="c.mp4", content_type="video/mp4",
        size_bytes=10, title="clip", staging_key=f"uploads/u1/{asset_id}/original.mp4",
        upload_expires_at=WHEN,
    )


def test_request_upload_on_new_asset_emits_upload_requested():
    events = decide(Asset(asset_id="a1"), request())
    assert len(events) == 1 and isinstance(events[0], UploadRequested)
    assert events[0].owner_id == "u1" and events[0].staging_key == "uploads/u1/a1/original.mp4"


def test_fold_sets_status_and_version():
    asset = fold(Asset(asset_id="a1"), decide(Asset(asset_id="a1"), request()))
    assert asset.status is AssetStatus.AWAITING_UPLOAD
    assert asset.version == 1 and asset.owner_id == "u1" and asset.size_bytes == 10


def test_request_upload_twice_is_a_conflict_with_a_code():
    asset = fold(Asset(asset_id="a1"), decide(Asset(asset_id="a1"), request()))
    with pytest.raises(Conflict) as exc:
        decide(asset, request())
    assert exc.value.code == "ASSET_EXISTS"
