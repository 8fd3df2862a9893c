"""The one way medialog writes to the log: one idempotent producer per process (acks=all), shared
by the api, the actors and the workers. A write returns once the broker acknowledged it, so a 2xx
or a stored position means the record is on the log; a retried send is written once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from time import perf_counter

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from medialog.config import Settings
from medialog.domain.commands import AssetCommand, CommandMeta
from medialog.envelope import CONTENT_TYPE, encode_command
from medialog.kafka import new_producer
from medialog.runtime.metrics import PRODUCE_SECONDS, LoopObserver

Headers = Sequence[tuple[str, bytes]]
EVENT_HEADERS: Headers = (("content-type", CONTENT_TYPE.encode()),)
WATCH_EVERY_S = 0.5  # how late past its deadline an unacknowledged wait may end


class Publisher:
    """Appends records keyed by aggregate id to topics named without their prefix."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer = new_producer(settings)
        # topic → its name on the broker and its PRODUCE_SECONDS child (once per topic)
        self._topics: dict[str, tuple[str, LoopObserver]] = {}
        self._timeout_s = settings.kafka_request_timeout_ms / 1000
        # Waits in deadline order (one timeout for all): (deadline, acknowledgement).
        self._waits: deque[tuple[float, asyncio.Future[object]]] = deque()
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.producer.stop()

    async def _watch(self) -> None:
        """Cancel the waits past their deadline (aiokafka ignores a cancelled future). One task
        for all: a timer per append (``asyncio.wait``/``timeout``/``call_at``) leaves a cancelled
        handle per request in the loop's heap for the whole timeout, which the ingest path pays
        for in heap and collector work."""
        loop = asyncio.get_running_loop()
        waits = self._waits
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            now = loop.time()
            while waits and (waits[0][1].done() or waits[0][0] <= now):
                _, ack = waits.popleft()
                ack.cancel()

    async def append(self, topic: str, key: str, values: Sequence[bytes],
                     headers: Headers = EVENT_HEADERS) -> None:
        """Append ``values`` in order (one key: one partition) and wait for every
        acknowledgement, at most ``kafka_request_timeout_ms`` in all (ended by ``_watch``, up
        to ``WATCH_EVERY_S`` late). Raises
        ``aiokafka.errors.KafkaError`` when the broker did not take them in time
        (``KafkaTimeoutError``: the idempotent producer never gives up on a batch by itself, so
        it may still be written, once; a retry with the same ids is harmless). Each successful
        call's time goes to ``PRODUCE_SECONDS``."""
        start = perf_counter()
        timeout = self._timeout_s
        known = self._topics.get(topic)
        if known is None:
            known = self._topics[topic] = (self.settings.topic(topic),
                                           PRODUCE_SECONDS.labels(topic))
        name, latency = known
        raw_key, hdrs = key.encode(), list(headers)
        sent = [await self.producer.send(name, value, key=raw_key, headers=hdrs)
                for value in values]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for ack in sent:
            if ack.done():
                continue
            self._waits.append((deadline, ack))  # the watchdog cancels it past the deadline
            if self._watchdog is None:
                self._watchdog = asyncio.create_task(self._watch())
            try:
                await ack
            except asyncio.CancelledError:
                if loop.time() < deadline:  # this task was cancelled, not the wait
                    raise
                late = [a for a in sent if not a.done() or a.cancelled()]
                for other in late:  # its outcome, when it comes, is no one's: retrieve it
                    other.add_done_callback(_retrieved)
                raise KafkaTimeoutError(f"{len(late)} of {len(sent)} records to {name} not "
                                        f"acknowledged in {timeout:g}s") from None
        for ack in sent:
            ack.result()
        latency.observe(perf_counter() - start)

    async def send_command(self, topic: str, aggregate_id: str, command: AssetCommand,
                           meta: CommandMeta) -> None:
        """A command for the actor owning ``aggregate_id``."""
        await self.append(topic, aggregate_id,
                          [encode_command(command, aggregate_id=aggregate_id, meta=meta)], ())


def _retrieved(ack: asyncio.Future[object]) -> None:
    if not ack.cancelled():
        ack.exception()
