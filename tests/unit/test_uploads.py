import pytest

from medialog.domain.errors import PayloadTooLarge, ValidationError
from medialog.domain.uploads import sanitize_filename, validate_upload

LIMIT = 10_000


def body(**kw):
    return {"filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": 1234, **kw}


def test_valid_upload_derives_kind_extension_and_default_title():
    spec = validate_upload(body(), max_bytes=LIMIT)
    assert (spec.kind, spec.extension, spec.title, spec.size_bytes) == (
        "video", "mp4", "clip", 1234)


def test_extension_comes_from_content_type_not_filename():
    spec = validate_upload(body(filename="evil.php", content_type="audio/mpeg"), max_bytes=LIMIT)
    assert (spec.kind, spec.extension, spec.filename) == ("audio", "mp3", "evil.php")


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\movie.mov", "movie.mov"),
        ("a\x00b\x07c.mp4", "abc.mp4"),
        ("we<ird>|name?.mp4", "we_ird_name_.mp4"),
        ("...", ""),
        ("x" * 400 + ".mp4", "x" * 255),
    ],
)
def test_filename_is_sanitised(raw, clean):
    assert sanitize_filename(raw) == clean


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"content_type": "application/x-sh"}, "content_type"),
        ({"content_type": None}, "content_type"),
        ({"size_bytes": 0}, "size_bytes"),
        ({"size_bytes": -5}, "size_bytes"),
        ({"size_bytes": "12"}, "size_bytes"),
        ({"size_bytes": True}, "size_bytes"),
        ({"filename": "../"}, "filename"),
        ({"filename": 7}, "filename"),
        ({"title": "ab"}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": 5}, "title"),
    ],
)
def test_invalid_fields_are_reported(bad, field):
    with pytest.raises(ValidationError) as exc:
        validate_upload(body(**bad), max_bytes=LIMIT)
    assert field in [d["field"] for d in exc.value.details]
    assert exc.value.code == "VALIDATION_ERROR"


def test_every_problem_listed_at_once():
    with pytest.raises(ValidationError) as exc:
        validate_upload({"filename": "", "content_type": "text/html", "size_bytes": -1},
                        max_bytes=LIMIT)
    assert {d["field"] for d in exc.value.details} == {"filename", "content_type", "size_bytes"}


def test_unknown_fields_and_non_objects_are_refused():
    with pytest.raises(ValidationError):
        validate_upload(body(owner_id="someone-else"), max_bytes=LIMIT)
    with pytest.raises(ValidationError):
        validate_upload(["clip.mp4"], max_bytes=LIMIT)


def test_size_limit():
    with pytest.raises(PayloadTooLarge) as exc:
        validate_upload(body(size_bytes=LIMIT + 1), max_bytes=LIMIT)
    assert exc.value.code == "UPLOAD_TOO_LARGE"
    assert validate_upload(body(size_bytes=LIMIT), max_bytes=LIMIT).size_bytes == LIMIT


def test_title_whitespace_is_normalised():
    assert validate_upload(body(title="  My \n  clip  "), max_bytes=LIMIT).title == "My clip"


@pytest.mark.parametrize(
    "title",
    ["clip\x00", "\x00\x00\x00", "cl\x07ip", "clip\x7f", "clip\x85x\x9b", "clip\ud800",
     "\udfffclip"],
)
def test_titles_with_control_characters_or_lone_surrogates_are_refused(title):
    # NUL: PostgreSQL refuses it after the event is on the log (security F3); a lone surrogate
    # cannot be encoded at all (security F5). Both are 400 VALIDATION_ERROR, before anything.
    with pytest.raises(ValidationError) as exc:
        validate_upload(body(title=title), max_bytes=LIMIT)
    assert exc.value.code == "VALIDATION_ERROR"
    assert [d["field"] for d in exc.value.details] == ["title"]


def test_a_filename_with_a_lone_surrogate_gives_a_clean_default_title():
    spec = validate_upload(body(filename="cl\ud800ip\x00.mp4"), max_bytes=LIMIT)
    assert (spec.filename, spec.title) == ("clip.mp4", "clip")
    spec.title.encode("utf-8")  # storable
