"""The dependencies object: what agents and projections need, opened by the process before they
start (the composition root builds it)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from medialog.clickhouse import Analytics
from medialog.config import Settings
from medialog.kafka import Lags
from medialog.runtime.notifier import Notifier
from medialog.runtime.publisher import Publisher
from medialog.storage import BlobStore


@dataclass(frozen=True)
class Deps:
    settings: Settings
    pool: asyncpg.Pool
    blobs: BlobStore
    publisher: Publisher
    notifier: Notifier  # wakes waiters on PostgreSQL's changes
    analytics: Analytics | None
    lags: Lags  # the projections' lag, reported by /health/ready
