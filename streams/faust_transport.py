"""Faust's aiokafka transport with one knob Faust does not expose: the consumer's
``fetch_max_wait_ms`` (Faust hard-codes 1500 ms).

Why: tansu does not answer a waiting fetch when new data arrives; it polls its storage within
the wait, so each hop through the log costs part of the wait (~0.6 s per hop at Faust's 1500 ms).
The wait must not be shorter either: a fetch behind the end first lists the partition's S3
objects, and once that listing takes longer than the wait a consumer gets about one batch per
fetch (``bench/log_reads.py``: at 9,000 objects nothing read in 20 s at 100 ms, 13,563 records/s
at 500 ms). Kafka's default, 500 ms, serves both brokers; Apache Kafka answers as soon as data
arrives. Only the value is changed, on the consumer before it starts; everything else is
Faust's."""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher (aiokafka 0.12–0.14).
        consumer._fetch_max_wait_ms = self.app.conf.fetch_max_wait_ms
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust app whose consumers wait at most ``fetch_max_wait_ms`` for new data."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 500, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conf.fetch_max_wait_ms = fetch_max_wait_ms

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
