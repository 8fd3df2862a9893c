"""The production-style subcommands, configured only by MEDIALOG_* variables, against the
running embedded stack."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from medialog.kafka import partitions_of
from projections.postgres.engagement import TOPICS as ENGAGEMENT_TOPICS
from tests.conftest import _kill_group, _processes_in, _reap_leftovers

pytestmark = pytest.mark.integration

DEV_EXIT_TIMEOUT_S = 60  # the exit takes the interpreter's start-up (~2 s); it used to be never


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


async def test_rebuild_reports_its_progress_on_stderr(stack):
    """Not on a terminal, ``medialog rebuild engagement`` says on stderr how many records it is
    to read (every record of its topics) and, at the end, that it read them all."""
    settings = stack.settings()
    tps = await partitions_of(settings, ENGAGEMENT_TOPICS)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        ends, starts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    total = sum(end - starts[tp] for tp, end in ends.items())
    result = await asyncio.to_thread(medialog, stack, "rebuild", "engagement")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"engagement: {total} records replayed in ")
    lines = [line for line in result.stderr.splitlines()
             if line.startswith("rebuild engagement: ")]
    assert lines[0] == f"rebuild engagement: {total:,} records to go", result.stderr
    assert lines[-1].startswith(f"rebuild engagement: done, {total:,}/{total:,} records in "), (
        result.stderr)
    assert "\r" not in result.stderr  # no terminal, no redrawn bar


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


def test_dev_exits_promptly_and_clearly_when_its_api_port_is_taken():
    """``medialog dev`` binds its api port before it starts anything: a port in use is a prompt
    non-zero exit with a message naming it, and no service was started (it used to start the
    whole stack and the consumers, fail to bind, and hang)."""
    data_dir = Path(tempfile.mkdtemp(prefix="medialog-test-port-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIALOG_")}
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            proc = subprocess.Popen(
                [sys.executable, "-m", "medialog", "dev", "--data-dir", str(data_dir),
                 "--port", str(port)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                start_new_session=True,
            )
            try:
                output, _ = proc.communicate(timeout=DEV_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                output, _ = proc.communicate()
                _reap_leftovers(data_dir)
                pytest.fail(f"medialog dev still running {DEV_EXIT_TIMEOUT_S}s after it found "
                            f"its api port taken:\n{output[-3000:]}")
        assert proc.returncode != 0, output
        assert f"api port {port} is in use" in output, output
        assert _processes_in(data_dir) == {}
        assert not (data_dir / "postgres").exists() and not (data_dir / "seaweedfs").exists()
    finally:
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)


def test_dev_banner_names_every_address_a_user_needs(stack):
    """The api, the Kafka bootstrap, the PostgreSQL DSN, where chDB lives, S3 and its
    credentials file: each is in the banner and each is what the stack runs."""
    banner = stack.log_path.read_text(errors="replace")
    banner = banner[banner.rindex("medialog is up:"):]
    s = stack.settings()
    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
             for line in banner.splitlines()[1:8] if ":" in line}
    assert banner.startswith(f"medialog is up: {stack.base_url}")
    assert lines["Kafka bootstrap"].split()[0] == s.kafka_bootstrap
    assert lines["PostgreSQL"] == s.postgres_dsn.get_secret_value()
    assert lines["ClickHouse"].endswith(str(stack.data_dir / "chdb"))
    assert lines["S3 endpoint"].split()[0] == s.s3_endpoint
    credentials = stack.data_dir / "s3-credentials"
    assert f"credentials: {credentials})" in lines["S3 endpoint"]
    assert s.s3_access_key.get_secret_value() in credentials.read_text()
