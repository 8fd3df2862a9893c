"""The embedded broker's cluster id: what ``kafka-storage format -t`` accepts."""

from __future__ import annotations

import base64

from medialog.embedded.kafka_broker import new_cluster_id


def test_cluster_ids_are_16_bytes_and_never_look_like_an_option():
    # 1 in 64 base64url strings starts with "-": 2,000 draws miss that with p ≈ 2e-14.
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
