"""The one way medialog writes to the log: one idempotent producer per process (acks=all), shared
by the api, the actors and the workers. A write returns once the broker acknowledged it, so a 2xx
or a stored position means the record is on the log; a retried send is written once."""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter

from aiokafka import AIOKafkaProducer

from medialog.config import Settings
from medialog.domain.commands import AssetCommand, CommandMeta
from medialog.envelope import CONTENT_TYPE, encode_command
from medialog.kafka import new_producer
from medialog.runtime.metrics import PRODUCE_SECONDS, LoopObserver

Headers = Sequence[tuple[str, bytes]]
EVENT_HEADERS: Headers = (("content-type", CONTENT_TYPE.encode()),)


class Publisher:
    """Appends records keyed by aggregate id to topics named without their prefix."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer = new_producer(settings)
        self._latency: dict[str, LoopObserver] = {}  # topic → its PRODUCE_SECONDS child

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def append(self, topic: str, key: str, values: Sequence[bytes],
                     headers: Headers = EVENT_HEADERS) -> None:
        """Append ``values`` in order (one key: one partition) and wait for every
        acknowledgement. Raises ``aiokafka.errors.KafkaError`` when the broker did not take
        them. Each successful call's time goes to ``PRODUCE_SECONDS``."""
        start = perf_counter()
        name, raw_key, hdrs = self.settings.topic(topic), key.encode(), list(headers)
        sent = [await self.producer.send(name, value, key=raw_key, headers=hdrs)
                for value in values]
        for ack in sent:
            await ack
        latency = self._latency.get(topic)
        if latency is None:
            latency = self._latency[topic] = PRODUCE_SECONDS.labels(topic)
        latency.observe(perf_counter() - start)

    async def send_command(self, topic: str, aggregate_id: str, command: AssetCommand,
                           meta: CommandMeta) -> None:
        """A command for the actor owning ``aggregate_id``."""
        await self.append(topic, aggregate_id,
                          [encode_command(command, aggregate_id=aggregate_id, meta=meta)], ())
