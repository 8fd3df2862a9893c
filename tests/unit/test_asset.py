"""Given events / when command / then events — the asset state machine."""

from datetime import UTC, datetime, timedelta

import pytest

from medialog.domain import commands as c
from medialog.domain import events as e
from medialog.domain.asset import Asset, AssetStatus, decide, fold
from medialog.domain.errors import Conflict, Forbidden

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = T0 + timedelta(minutes=15)


def rendition(name="360p"):
    from medialog.domain.events.asset import Rendition
    return Rendition(name=name, playlist_key=f"a1/hls/{name}/index.m3u8", bandwidth=800_000,
                     codecs="avc1.4d401e,mp4a.40.2", width=640, height=360)


def request():
    return c.RequestUpload(
        asset_id="a1", owner_id="u1", kind="video", filename="c.mp4", content_type="video/mp4",
        size_bytes=100, title="clip", staging_key="uploads/u1/a1/original.mp4",
        upload_expires_at=EXPIRES,
    )


def complete(size=100, ctype="video/mp4", who="u1", admin=False, now=T0, observed=True):
    facts = c.ObjectFacts(size_bytes=size, content_type=ctype, etag="x") if observed else None
    return c.CompleteUpload(requested_by=who, is_admin=admin, max_bytes=1000, now=now, grace_s=60,
                            observed=facts)


def given(*cmds):
    asset = Asset(asset_id="a1")
    for cmd in cmds:
        asset = fold(asset, decide(asset, cmd))
    return asset


PROMOTE = c.RecordPromotion(master_key="a1/original.mp4", size_bytes=100, job_id="j1")
START = c.StartTranscode(job_id="j1", attempt=1, rungs=["360p", "720p"])


def test_happy_path_to_ready():
    asset = given(request(), complete(), PROMOTE, START,
                  c.RecordRendition(job_id="j1", rendition=rendition()))
    assert asset.status is AssetStatus.PROCESSING and asset.done_rungs == ("360p",)
    events = decide(asset, c.CompleteTranscode(
        job_id="j1", renditions=[rendition(), rendition("720p")],
        master_playlist_key="a1/hls/master.m3u8", thumbnail_key="a1/thumb.jpg", duration_s=4.0,
        width=1280, height=720, probe={}))
    assert [type(x) for x in events] == [e.TranscodeCompleted]
    ready = fold(asset, events)
    assert ready.status is AssetStatus.READY and ready.version == 7


def test_promotion_requests_the_first_transcode_job():
    events = decide(given(request(), complete()), PROMOTE)
    assert [type(x) for x in events] == [e.Promoted, e.TranscodeRequested]
    assert events[1].job_id == "j1" and events[1].rungs is None


def test_promoted_and_deleted_carry_the_staging_key_for_the_janitor():
    """What a worker needs travels on the events: it never reads the actor's state."""
    staging = request().staging_key
    promoted = decide(given(request(), complete()), PROMOTE)[0]
    deleted = decide(given(request()), c.DeleteAsset(requested_by="u1", is_admin=False))[0]
    assert promoted.staging_key == staging and deleted.staging_key == staging


@pytest.mark.parametrize("cmd, code", [
    (complete(size=101), "UPLOAD_SIZE_MISMATCH"),
    (complete(ctype="text/html"), "UPLOAD_CONTENT_TYPE_MISMATCH"),
    (complete(size=0), "UPLOAD_EMPTY"),
    (complete(observed=False), "UPLOAD_MISSING"),
    (complete(now=EXPIRES + timedelta(seconds=61)), "UPLOAD_EXPIRED"),
])
def test_complete_is_rejected_with_a_reason(cmd, code):
    with pytest.raises(Conflict) as exc:
        decide(given(request()), cmd)
    assert exc.value.code == code


def test_only_the_owner_or_an_admin_completes():
    with pytest.raises(Forbidden):
        decide(given(request()), complete(who="mallory"))
    assert decide(given(request()), complete(who="root", admin=True))


@pytest.mark.parametrize("history, cmd", [
    ((), PROMOTE),                                   # no such asset
    ((request(),), PROMOTE),                         # not uploaded yet
    ((request(), complete()), START),                # not promoted: job unknown
    ((request(), complete(), PROMOTE), complete()),  # already completed
    ((request(),), c.RecordRendition(job_id="j1", rendition=rendition())),
])
def test_invalid_transitions_are_conflicts(history, cmd):
    with pytest.raises(Conflict):
        decide(given(*history), cmd)


def test_expiry_only_after_validity_plus_grace():
    asset = given(request())
    with pytest.raises(Conflict) as exc:
        decide(asset, c.ExpireUpload(now=EXPIRES + timedelta(seconds=30), grace_s=60))
    assert exc.value.code == "UPLOAD_NOT_EXPIRED"
    expired = fold(asset, decide(
        asset, c.ExpireUpload(now=EXPIRES + timedelta(seconds=61), grace_s=60)))
    assert expired.status is AssetStatus.EXPIRED
    with pytest.raises(Conflict):
        decide(expired, complete())


def test_delete_from_any_state_then_nothing_else():
    for history in [(request(),), (request(), complete()), (request(), complete(), PROMOTE, START)]:
        deleted = given(*history, c.DeleteAsset(requested_by="u1", is_admin=False))
        assert deleted.status is AssetStatus.DELETED
        with pytest.raises(Conflict) as exc:
            decide(deleted, c.DeleteAsset(requested_by="u1", is_admin=False))
        assert exc.value.code == "ASSET_DELETED"
    with pytest.raises(Forbidden):
        decide(given(request()), c.DeleteAsset(requested_by="x", is_admin=False))


def test_failed_transcode_and_rerun_of_failed_rungs_only():
    asset = given(request(), complete(), PROMOTE, START,
                  c.RecordRendition(job_id="j1", rendition=rendition()),
                  c.FailTranscode(job_id="j1", reason="ffmpeg exited 1", rung="720p", attempts=3))
    assert asset.status is AssetStatus.FAILED
    (req,) = decide(asset, c.RequestTranscode(requested_by="u1", is_admin=False, job_id="j2",
                                              only_failed=True))
    assert req.rungs == ["720p"]
    with pytest.raises(Conflict) as exc:  # the old job can no longer report
        decide(fold(asset, [req]), c.StartTranscode(job_id="j1", attempt=4, rungs=["720p"]))
    assert exc.value.code == "STALE_JOB"


def test_repeated_rendition_is_an_accepted_no_op():
    asset = given(request(), complete(), PROMOTE, START,
                  c.RecordRendition(job_id="j1", rendition=rendition()))
    assert decide(asset, c.RecordRendition(job_id="j1", rendition=rendition())) == []


def test_metadata_changes_only_what_differs_and_only_by_the_owner():
    asset = given(request())
    (ev,) = decide(asset, c.UpdateMetadata(requested_by="u1", is_admin=False, title="clip",
                                           tags=["a"], visibility="private"))
    assert ev.title is None and ev.tags == ["a"] and ev.visibility == "private"
    assert decide(fold(asset, [ev]), c.UpdateMetadata(requested_by="u1", is_admin=False,
                                                      visibility="private")) == []
    with pytest.raises(Forbidden):
        decide(asset, c.UpdateMetadata(requested_by="admin", is_admin=True, title="new one"))
