"""An agent whose body raises ends the process before Faust can commit the record it was on
(``streams.app.agent``); a cancelled agent (a stop) does not."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest

from streams import app as streams_app


class Ended(Exception):
    """Stands for the process ending (``os._exit`` does not return)."""


def _registered(body: Any) -> Any:
    app = faust.App("agent-failure-test", broker="kafka://127.0.0.1:9", autodiscover=False)
    return streams_app.agent(app, app.topic("t"), name="t-agent")(body)


async def test_a_raising_body_ends_the_process_with_its_code(monkeypatch: Any) -> None:
    codes: list[int] = []

    def exit_(code: int) -> None:
        codes.append(code)
        raise Ended

    monkeypatch.setattr(streams_app.os, "_exit", exit_)
    monkeypatch.setattr(streams_app.logging, "shutdown", lambda: None)  # pytest's handlers

    async def body(stream: Any) -> None:
        raise KeyError("a bug")

    with pytest.raises(Ended):
        await _registered(body)(None)
    assert codes == [streams_app.AGENT_FAILED_EXIT]


async def test_a_cancelled_body_is_not_a_failure(monkeypatch: Any) -> None:
    monkeypatch.setattr(streams_app.os, "_exit", lambda code: pytest.fail(f"exit {code}"))

    async def body(stream: Any) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await _registered(body)(None)
