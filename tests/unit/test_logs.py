"""The one logging setup: text or JSON lines, each carrying the request id while one is set."""

from __future__ import annotations

import json
import logging

import pytest

from medialog.runtime.logs import REQUEST_ID, JsonFormatter, RequestIdFilter, setup_logging


def record(message: str, *args: object) -> logging.LogRecord:
    made = logging.LogRecord("medialog.test", logging.INFO, __file__, 1, message, args, None)
    RequestIdFilter().filter(made)
    return made


def test_json_lines_carry_the_request_id_only_inside_a_request() -> None:
    outside = json.loads(JsonFormatter().format(record("hello %s", "world")))
    assert outside["message"] == "hello world" and "request_id" not in outside
    token = REQUEST_ID.set("req-123")
    try:
        inside = json.loads(JsonFormatter().format(record("in a request")))
    finally:
        REQUEST_ID.reset(token)
    assert inside["request_id"] == "req-123"
    assert inside["level"] == "INFO" and inside["logger"] == "medialog.test"
    assert inside["time"].endswith("+00:00")


def test_json_lines_hold_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        made = record("failed")
        made.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(made))
    assert "ValueError: boom" in line["exception"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_setup_gives_one_handler_with_the_filter(fmt: str) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("warning", fmt)  # type: ignore[arg-type]
        [handler] = root.handlers
        assert root.level == logging.WARNING
        assert any(isinstance(f, RequestIdFilter) for f in handler.filters)
        assert isinstance(handler.formatter, JsonFormatter) == (fmt == "json")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
