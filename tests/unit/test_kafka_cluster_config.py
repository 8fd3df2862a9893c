"""The embedded Kafka's configuration for one node and for three (``medialog dev --brokers 3``),
and the topic configs medialog creates topics with."""

from __future__ import annotations

from pathlib import Path

from medialog.embedded.kafka_broker import KafkaBroker
from medialog.embedded.stack import kafka_bootstrap_of
from medialog.kafka import TOPICS, topic_configs


def props(broker: KafkaBroker) -> dict[str, str]:
    return dict(line.split("=", 1) for line in broker.server_properties().splitlines())


def node(node_id: int = 1, quorum: dict[int, int] | None = None) -> KafkaBroker:
    return KafkaBroker(Path("/d"), 9092, 9093, "cid", Path("/d/k.log"), Path("/c"),
                       node_id=node_id, quorum=quorum)


def test_a_node_alone_keeps_everything_at_one_replica():
    p = props(node())
    assert p["node.id"] == "1" and p["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert p["offsets.topic.replication.factor"] == "1"
    assert p["transaction.state.log.min.isr"] == "1"
    assert "default.replication.factor" not in p and "min.insync.replicas" not in p
    assert "controlled.shutdown.enable" not in p


def test_a_node_of_three_replicates_to_all_with_two_in_sync():
    quorum = {1: 9093, 2: 9193, 3: 9293}
    p = props(node(node_id=2, quorum=quorum))
    assert p["node.id"] == "2"
    assert p["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293")
    assert p["offsets.topic.replication.factor"] == "3"
    assert p["transaction.state.log.replication.factor"] == "3"
    assert p["transaction.state.log.min.isr"] == "2"
    assert p["default.replication.factor"] == "3" and p["min.insync.replicas"] == "2"
    assert p["controlled.shutdown.enable"] == "false"


def test_topics_with_three_replicas_need_two_in_sync():
    views = next(t for t in TOPICS if t.name == "events.views")
    jobs = next(t for t in TOPICS if t.name == "jobs.transcode")
    assert topic_configs(views, 1) == {"retention.ms": "-1"}
    assert topic_configs(jobs, 1) == {}
    assert topic_configs(views, 3) == {"retention.ms": "-1", "min.insync.replicas": "2"}
    assert topic_configs(jobs, 3) == {"min.insync.replicas": "2"}


def test_the_bootstrap_names_every_node():
    ports = {"kafka": 1, "kafka_2": 2, "kafka_3": 3}
    assert kafka_bootstrap_of({"ports": ports}) == "127.0.0.1:1"  # a data dir of before
    assert kafka_bootstrap_of({"ports": ports, "kafka_brokers": 3}) == (
        "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
