"""``Settings.as_env`` gives a child process (``medialog dev``'s roles process) the very settings
of its parent through ``MEDIALOG_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medialog.config import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in os.environ:
        if name.startswith("MEDIALOG_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("key_file", [None, Path("/srv/keys/jwt.pem")])
def test_settings_survive_the_trip_through_the_environment(
    clean_env: pytest.MonkeyPatch, key_file: Path | None
) -> None:
    parent = Settings.from_env(
        data_dir=Path("/srv/medialog"), topic_partitions=1,
        postgres_dsn="postgresql://u:pw@db:5432/m", s3_secret_key="s3-secret",
        signing_keys="k1:0123456789abcdef0123456789abcdef", view_threshold_s=7.5,
        jwt_private_key_file=key_file,
    )
    env = parent.as_env()
    assert env["MEDIALOG_S3_SECRET_KEY"] == "s3-secret"  # the value, not pydantic's mask
    for name, value in env.items():
        clean_env.setenv(name, value)
    child = Settings.from_env()
    assert child == parent
    assert child.jwt_private_key_file == key_file
