"""How reading the embedded log slows down as a partition grows.

    .venv/bin/python bench/log_reads.py [--objects 500,3000,9000] [--records 47] [--tail 150]

tansu stores each produce request's batch as one S3 object and, on every fetch that is behind
the end of the log, lists the partition's objects from the first one. Here a fresh embedded
stack (SeaweedFS, tansu, PostgreSQL) gets one single-partition topic, and batches of
``--records`` records (the size the api's view-report batches have under load, ~6 KB) are
appended one produce request each until the partition holds each of ``--objects``. At each size:

* **ours**: records/s read through tansu by an aiokafka consumer from ``--tail`` batches before
  the end, with ``fetch_max_wait_ms`` 100 and with Kafka's default, 500 (what medialog's
  consumers use);
* **raw baseline**: records/s of reading the same ``--tail`` batch objects straight from S3 (one
  GET each, as tansu does), measured in the same run on the same stack;
* the time one listing of the partition takes (what each fetch behind the end pays first).

Prints the ratio ours ÷ raw at each size. The ratio falling as the partition grows is the
finding this bench records: once a listing takes longer than the fetch wait, a consumer gets
about one batch per listing. No goal: this describes the embedded broker, which production
replaces with Apache Kafka; exit status 0 unless a read loses or repeats a record.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
try:
    import medialog  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(_HERE.parent / "src"))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from medialog.embedded.stack import EmbeddedStack

TOPIC = "bench.log-reads"
BUCKET = "tansu"
WAITS_MS = (100, 500)
READ_LIMIT_S = 20.0
RECORD = b'{"specversion":"1.0","type":"medialog.view.reported","data":' + b"x" * 64 + b"}"


async def append(producer: AIOKafkaProducer, batches: int, records: int) -> None:
    """``batches`` produce requests of ``records`` records each (one S3 object each)."""
    for _ in range(batches):
        batch = producer.create_batch()
        for i in range(records):
            batch.append(key=str(i).encode(), value=RECORD, timestamp=None)
        batch.close()
        await (await producer.send_batch(batch, TOPIC, partition=0))


async def read_through_tansu(bootstrap: str, start: int, end: int,
                             wait_ms: int) -> tuple[float, bool]:
    """Records/s of one consumer reading offsets ``start``..``end`` (at most ``READ_LIMIT_S``),
    and whether it got to ``end``."""
    tp = TopicPartition(TOPIC, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=wait_ms)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        expected, began = start, time.perf_counter()
        while expected < end and time.perf_counter() - began < READ_LIMIT_S:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if record.offset != expected:
                    raise SystemExit(f"read offset {record.offset}, expected {expected}")
                expected += 1
        return (expected - start) / (time.perf_counter() - began), expected >= end
    finally:
        await consumer.stop()


def tail_keys(s3: Any, prefix: str, tail: int) -> tuple[list[str], float]:
    """The last ``tail`` object keys of the partition, and how long one full listing took."""
    keys: list[str] = []
    began = time.perf_counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys[-tail:], time.perf_counter() - began


def read_raw(s3: Any, keys: list[str], records: int) -> float:
    """Records/s of GETting ``keys`` one after another (what a fetch does after listing)."""
    began = time.perf_counter()
    for key in keys:
        s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return len(keys) * records / (time.perf_counter() - began)


async def run(args: argparse.Namespace, data_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with EmbeddedStack(data_dir) as stack:
        bootstrap = stack.kafka_bootstrap
        assert stack.seaweedfs is not None
        s3 = stack.seaweedfs.client()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, 1, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        prefix = f"clusters/tansu_cluster/topics/{TOPIC}/partitions/0000000000/records/"
        try:
            held = 0
            for size in args.objects:
                await append(producer, size - held, args.records)
                held = size
                end = size * args.records
                start = end - args.tail * args.records
                keys, list_s = await asyncio.to_thread(tail_keys, s3, prefix, args.tail)
                raw = await asyncio.to_thread(read_raw, s3, keys, args.records)
                ours = {w: await read_through_tansu(bootstrap, start, end, w) for w in WAITS_MS}
                rows.append({"objects": size, "list_s": list_s, "raw": raw, "ours": ours})
                print(line(rows[-1]), flush=True)
        finally:
            await producer.stop()
    return rows


def line(row: dict[str, Any]) -> str:
    parts = [(f"{row['objects']:>6} objects: one listing {row['list_s'] * 1e3:6.0f} ms, "
              f"raw S3 reads {row['raw']:8,.0f} records/s")]
    for wait, (rate, complete) in row["ours"].items():
        note = "" if complete else f" (did not reach the end in {READ_LIMIT_S:g} s)"
        parts.append(f"through tansu, wait {wait} ms: {rate:8,.0f} records/s, "
                     f"ratio {rate / row['raw']:.2f}{note}")
    return "\n    ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", default="500,3000,9000",
                        help="partition sizes (batch objects) to measure at, ascending")
    parser.add_argument("--records", type=int, default=47, help="records per batch")
    parser.add_argument("--tail", type=int, default=150, help="batches read at each size")
    args = parser.parse_args(argv)
    args.objects = sorted({max(int(n), 1) for n in args.objects.split(",")})
    args.tail = min(max(args.tail, 1), args.objects[0])
    data_dir = Path(tempfile.mkdtemp(prefix="medialog-logreads-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    try:
        print(f"one partition, {args.records} records a batch, reading the last {args.tail} "
              f"batches at each size (data dir {data_dir})", flush=True)
        asyncio.run(run(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
