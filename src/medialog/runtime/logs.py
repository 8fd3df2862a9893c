"""One logging setup for every role: text for a terminal, or JSON lines for a log pipeline
(``MEDIALOG_LOG_FORMAT``). Every line logged while a request is handled carries its request id
(``REQUEST_ID``, set by the api's middleware), so one request's lines can be found
together, and the same id is the ``correlationid`` of the events it caused."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
NOISY = ("aiokafka", "faust", "mode", "botocore", "urllib3")
TEXT = "%(asctime)s %(levelname)s [%(process)d] %(name)s%(request_tag)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (or None) and ``request_tag`` (`` [rid]`` or '') to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        record.request_id = rid
        record.request_tag = f" [{rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger, pid, message, request_id
    when there is one, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            line["request_id"] = rid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(level: str, fmt: Literal["text", "json"]) -> None:
    """Configure the root logger once for the process (replacing any handler it had)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
