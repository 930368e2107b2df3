"""Server selection (cluster/dispatch/selection.py): candidates, filters and every algorithm."""

from __future__ import annotations

import random
from typing import Any

import pytest

from cluster.dispatch.selection import UnknownAlgorithm, available, candidates, choose, job_budget


def server(sid: str, *groups: str, **fields: Any) -> dict[str, Any]:
    return {"id": sid, "hostname": f"{sid}.example.com", "enabled": True, "groups": list(groups), **fields}


ONLINE = {s["id"]: s for s in (server("s3", "web", title="Charlie"), server("s1", "web", "db", title="alpha"),
                               server("s2", "db", title="Bravo"))}  # fmt: skip


def pick(servers: Any, algo: str, **options: Any) -> str:
    chosen = choose(servers, algo, **options)
    assert chosen is not None
    return str(chosen["id"])


def ids(servers: Any) -> list[str]:
    return [s["id"] for s in servers]


def test_candidates_follow_target_order_once_each_and_only_online() -> None:
    assert ids(candidates(["s2", "web"], ONLINE)) == ["s2", "s3", "s1"]
    assert ids(candidates("db, s9", ONLINE)) == ["s1", "s2"]  # a CSV string; s9 is not online
    assert candidates([], ONLINE) == [] and candidates(None, ONLINE) == []


def test_job_budget_is_the_servers_own_else_the_smallest_group_limit() -> None:
    groups = {"web": {"max_jobs_per_server": 4}, "db": {"max_jobs_per_server": 2}}
    assert job_budget(server("a", "web", "db"), groups) == 2
    assert job_budget(server("a", "web", "db", maxJobs=9), groups) == 9
    assert job_budget(server("a", "other"), groups) == 0


def test_filters_enabled_alerts_budget_and_expression() -> None:
    servers = [server("a", "g"), server("b", "g", enabled=False), server("c", "g"), server("d", "g"),
               server("e", "g", maxJobs=1)]  # fmt: skip
    groups = {"g": {"max_jobs_per_server": 3}}
    load = {"c": 2.5, "d": 2}
    kept = available(servers, groups=groups, load=load, weight=1, alert_blocked=["a"])
    assert ids(kept) == ["d", "e"]  # b disabled, a has a job-limiting alert, c would pass 3 (2.5 + 1)
    assert ids(available(servers, groups=groups, load=load, weight=2)) == ["a"]  # e's budget is 1
    assert ids(available(servers, groups={}, load={}, expression=lambda s: s["id"] in "ac")) == ["a", "c"]

    def broken(s: Any) -> bool:
        raise ValueError("bad expression")

    assert ids(available(servers[:1], groups={}, load={}, expression=broken)) == ["a"]


def test_every_algorithm() -> None:
    servers = [server("s3", title="Charlie", info={"cpu": {"avgLoad": 0.5}, "memory": {"active": 900},
                      "monitors": {"disk": 70}, "deltas": {"net": 5}}),
               server("s1", title="alpha", info={"cpu": {"avgLoad": 2.0}, "memory": {"active": 100},
                      "monitors": {"disk": 10}, "deltas": {"net": 50}}),
               server("s2", title="Bravo", info={"cpu": {"avgLoad": 1.0}})]  # fmt: skip
    assert pick(servers, "prefer_first") == "s1"
    assert pick(servers, "prefer_last") == "s3"
    assert pick(servers, "prefer_first_natural") == "s3"
    assert pick(servers, "prefer_last_natural") == "s2"
    assert [pick(servers, "round_robin", robin=n) for n in range(4)] == ["s3", "s1", "s2", "s3"]
    assert pick(servers, "least_cpu") == "s3"
    assert pick(servers, "least_mem") == "s1"  # s2 reports none: last
    assert pick(servers, "fewest_jobs", active_counts={"s3": 2, "s1": 1}) == "s2"
    monitors = {"disk": {"id": "disk"}, "net": {"id": "net", "delta": True}}
    assert pick(servers, "monitor:disk", monitors=monitors) == "s1"
    assert pick(servers, "net", monitors=monitors) == "s3"
    picks = {pick(servers, "random", rng=random.Random(seed)) for seed in range(30)}
    assert picks == {"s1", "s2", "s3"}
    assert choose([], "random") is None
    with pytest.raises(UnknownAlgorithm):
        choose(servers, "fastest")
