"""The production-style subcommands, configured only by MEDIALOG_* variables, against the
running embedded stack."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def medialog(stack, *args: str) -> subprocess.CompletedProcess[str]:
    s = stack.settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIALOG_")}
    env.update(
        MEDIALOG_POSTGRES_DSN=s.postgres_dsn.get_secret_value(),
        MEDIALOG_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
        MEDIALOG_DATA_DIR=str(stack.data_dir),
    )
    return subprocess.run([sys.executable, "-m", "medialog", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_migrate_is_idempotent(stack):
    result = medialog(stack, "migrate", "--postgres-only")
    assert result.returncode == 0, result.stderr
    assert "nothing (up to date)" in result.stdout


def test_topics_are_all_present_and_creation_is_idempotent(stack):
    check = medialog(stack, "topics", "--check")
    assert check.returncode == 0 and "all topics present" in check.stdout, check.stderr
    create = medialog(stack, "topics")
    assert create.returncode == 0 and "nothing (all present)" in create.stdout, create.stderr


async def test_token_command_mints_a_token_the_api_accepts(stack, http):
    result = medialog(stack, "token", "--user", "cli-user", "--role", "creator", "--ttl", "120")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    async with http.post(f"{stack.base_url}/v1/uploads",
                         json={"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 9},
                         headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 202


def test_bad_configuration_is_a_clear_error(stack):
    result = medialog(stack, "token", "--user", "u", "--role", "superuser")
    assert result.returncode != 0 and "superuser" in result.stderr
    env_bad = subprocess.run(
        [sys.executable, "-m", "medialog", "topics", "--check"],
        env={**os.environ, "MEDIALOG_JWT_ALGORITHMS": "none"}, capture_output=True, text=True,
        timeout=60,
    )
    assert env_bad.returncode != 0 and "jwt_algorithms" in env_bad.stderr
