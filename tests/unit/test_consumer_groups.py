"""Each set of consuming roles is its own consumer group (Kafka gives a partition to one member
of a group: two processes with different agents on one topic must not share one)."""

from __future__ import annotations

import itertools
import re

from medialog.config import ALL_ROLES, Settings


def test_every_consuming_role_in_one_process_keeps_the_plain_group() -> None:
    s = Settings(consumer_group="ml")
    assert s.consumer_group_of(ALL_ROLES) == "ml"
    assert s.consumer_group_of(  # the api consumes nothing
        ["projections", "workers", "actors", "analytics"]) == "ml"


def test_split_roles_get_groups_of_their_own_and_replicas_share_them() -> None:
    s = Settings(consumer_group="ml")
    consuming = ("actors", "workers", "projections", "analytics")
    groups = {role: s.consumer_group_of([role]) for role in consuming}
    assert groups == {"actors": "ml.actors", "workers": "ml.workers",
                      "projections": "ml.projections", "analytics": "ml.analytics"}
    assert s.consumer_group_of(["api", "workers"]) == "ml.workers"
    assert s.consumer_group_of(["workers", "actors"]) == s.consumer_group_of(["actors", "workers"])
    # medialog dev: the api with the ClickHouse projection, the other roles in a child process
    assert s.consumer_group_of(["api", "analytics"]) == "ml.analytics"
    assert (s.consumer_group_of(["actors", "workers", "projections"])
            == "ml.actors-projections-workers")


def test_every_group_is_a_legal_kafka_topic_name() -> None:
    """Faust names topics after its application id (``<id>-__assignor-__leader``)."""
    s = Settings()
    for n in range(1, len(ALL_ROLES) + 1):
        for roles in itertools.combinations(ALL_ROLES, n):
            if set(roles) != {"api"}:
                assert re.fullmatch(r"[A-Za-z0-9._-]+", s.consumer_group_of(roles)), roles


def test_each_projection_reads_in_a_group_of_its_own() -> None:
    """Shared by the processes running that projection, by no other reader and no Faust app."""
    from medialog.bootstrap import readers
    from medialog.kafka import Lags
    from medialog.runtime.deps import Deps
    from projections.clickhouse import projection as clickhouse
    from projections.postgres import assets, engagement
    from projections.reader import group_of

    s = Settings(consumer_group="ml")
    groups = {group_of(s, p.NAME) for p in (assets, engagement, clickhouse)}
    assert groups == {"ml.projection.assets", "ml.projection.engagement",
                      "ml.projection.clickhouse"}
    faust = {s.consumer_group_of(roles) for n in range(1, len(ALL_ROLES) + 1)
             for roles in itertools.combinations(ALL_ROLES, n) if set(roles) != {"api"}}
    assert not groups & faust
    deps = Deps(settings=s, pool=None, blobs=None, publisher=None,  # type: ignore[arg-type]
                notifier=None, analytics=None, lags=Lags())  # type: ignore[arg-type]
    assert set(readers(deps, {"projections", "actors"})) == {assets.NAME, engagement.NAME}
    assert set(readers(deps, {"api", "analytics"})) == {clickhouse.NAME}
    assert readers(deps, {"api", "actors", "workers"}) == {}
