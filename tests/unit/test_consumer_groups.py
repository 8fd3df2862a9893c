"""Each set of consuming roles is its own consumer group (Kafka gives a partition to one member
of a group: two processes with different agents on one topic must not share one)."""

from __future__ import annotations

from medialog.config import ALL_ROLES, Settings


def test_every_consuming_role_in_one_process_keeps_the_plain_group() -> None:
    s = Settings(consumer_group="ml")
    assert s.consumer_group_of(ALL_ROLES) == "ml"
    assert s.consumer_group_of(["projections", "workers", "actors"]) == "ml"  # api consumes nothing


def test_split_roles_get_groups_of_their_own_and_replicas_share_them() -> None:
    s = Settings(consumer_group="ml")
    groups = {role: s.consumer_group_of([role]) for role in ("actors", "workers", "projections")}
    assert groups == {"actors": "ml.actors", "workers": "ml.workers",
                      "projections": "ml.projections"}
    assert s.consumer_group_of(["api", "workers"]) == "ml.workers"
    assert s.consumer_group_of(["workers", "actors"]) == s.consumer_group_of(["actors", "workers"])
