"""The api producer's batching comes from the settings (``MEDIALOG_KAFKA_LINGER_MS``)."""

from __future__ import annotations

import pydantic
import pytest

from medialog.config import Settings
from medialog.kafka import new_producer


async def _linger_s() -> float:
    producer = new_producer(Settings.from_env())
    try:
        return float(producer._message_accumulator._linger_time)
    finally:
        await producer.stop()


async def test_the_producer_lingers_as_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDIALOG_KAFKA_LINGER_MS", raising=False)
    assert await _linger_s() == 0.010
    monkeypatch.setenv("MEDIALOG_KAFKA_LINGER_MS", "25")
    assert await _linger_s() == 0.025


@pytest.mark.parametrize("value", ["-1", "1001", "soon"])
def test_a_linger_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MEDIALOG_KAFKA_LINGER_MS", value)
    with pytest.raises(pydantic.ValidationError, match="kafka_linger_ms"):
        Settings.from_env()
