"""GET /metrics: every family the operator's dashboards and alerts use, parsed by prometheus_client's own parser,
on an in-process node and on a two-node cluster of real `podium serve` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from api.app import create_app
from api.settings import ConfigError, Settings
from cluster.node import NodeRuntime
from storage.connection import Database
from tests.authkit import Site, open_site
from tests.jobkit import Jobs
from tests.servers import Cluster, Node

FAMILIES = {
    "podium_requests": "counter",
    "podium_request_duration_seconds": "histogram",
    "podium_role": "gauge",
    "podium_epoch": "gauge",
    "podium_failovers": "counter",
    "podium_scheduler_lag_seconds": "gauge",
    "podium_scheduler_skipped_slots": "counter",
    "podium_scheduler_launches": "counter",
    "podium_jobs": "gauge",
    "podium_dispatch_latency_seconds": "histogram",
    "podium_agents_connected": "gauge",
    "podium_store_rtt_seconds": "histogram",
    "podium_store_up": "gauge",
    "podium_cache_hits": "counter",
    "podium_cache_misses": "counter",
    "podium_node_info": "gauge",
}


def parse(text: str) -> dict[str, list[Sample]]:
    """Family name -> samples; fails on anything the Prometheus text format does not allow."""
    families = {}
    for family in text_string_to_metric_families(text):
        assert FAMILIES.get(family.name, family.type) == family.type, (family.name, family.type)
        families[family.name] = list(family.samples)
    return families


def value(families: dict[str, list[Sample]], sample: str, **labels: str) -> float:
    """The one sample named `sample` whose labels include `labels` (0 when there is none)."""
    found = [s.value for name in families for s in families[name] if s.name == sample
             and all(s.labels.get(k) == v for k, v in labels.items())]  # fmt: skip
    assert len(found) <= 1, (sample, labels, found)
    return found[0] if found else 0.0


async def scrape(site: Site, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
                 ) -> tuple[int, str, str]:  # fmt: skip
    resp = await site.client.get("/metrics", headers=headers or {}, params=params or {})
    return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


@pytest.fixture
async def keyed(db: Database, tmp_path: Path) -> AsyncIterator[Site]:
    async for s in open_site(db, tmp_path / "data", login_ip_limit=0, metrics="key"):
        yield s


async def test_every_family_and_the_calls_made(site: Site, admin: dict[str, str]) -> None:
    before = parse((await scrape(site))[2])
    pings = value(before, "podium_requests_total", api="ping", code="0")
    for _ in range(3):
        assert (await site.call("ping", method="GET"))[0] == 200
    for _ in range(2):
        assert (await site.call("get_events", headers=admin))[1]["code"] == 0
    assert (await site.call("get_events"))[1]["code"] == "session"  # no credentials
    for missing in ("no_such_call_here", "nor_this_one"):
        assert (await site.call(missing))[1]["code"] == "api"
    assert (await site.call("login", {"username": "admin", "password": "nope"}, ns="user"))[1]["code"] == "login"

    status, ctype, text = await scrape(site)
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
    families = parse(text)
    assert set(FAMILIES) <= set(families), set(FAMILIES) - set(families)

    assert value(families, "podium_requests_total", api="ping", code="0") == pings + 3
    assert value(families, "podium_requests_total", api="get_events", code="0") >= 2
    assert value(families, "podium_requests_total", api="get_events", code="session") == 1
    assert value(families, "podium_requests_total", api="unknown", code="api") == 2  # names outside the registry
    assert [k for k in site.node.metrics.requests if k[1] == "unknown"] == [("", "unknown", "api")]  # one entry
    assert value(families, "podium_requests_total", api="user/login", code="login") == 1
    assert not [s for s in families["podium_requests"] if s.labels["api"] == "no_such_call_here"]
    assert value(families, "podium_request_duration_seconds_count", api="ping") == pings + 3
    assert value(families, "podium_request_duration_seconds_bucket", api="ping", le="+Inf") == pings + 3

    assert value(families, "podium_role", role="primary") == 1
    assert value(families, "podium_role", role="satellite") == 0
    assert value(families, "podium_epoch") == site.node.epoch >= 1
    assert value(families, "podium_failovers_total", change="became_primary") == 1
    assert value(families, "podium_failovers_total", change="lost_primary") == 0
    assert value(families, "podium_store_up") == 1
    assert value(families, "podium_store_rtt_seconds_count") >= 1  # at least the lease acquisition
    assert value(families, "podium_node_info", node="n1") == 1
    # The primary reports its view's jobs per state (none here), every live state as a series.
    assert {s.labels["state"] for s in families["podium_jobs"]} >= {"queued", "active", "ready"}
    assert value(families, "podium_jobs", state="active") == 0
    # get_events read the definitions cache; the admin's session came from the session cache.
    assert value(families, "podium_cache_hits_total", cache="definitions") >= 1
    assert value(families, "podium_cache_hits_total", cache="sessions") >= 1
    assert {s.labels["cache"] for s in families["podium_cache_misses"]} >= {"definitions", "state", "users",
                                                                          "sessions", "api_keys", "principals"}


async def test_metrics_behind_a_key(keyed: Site) -> None:
    status, _, text = await scrape(keyed)
    assert status == 401 and '"session"' in text
    status, _, _ = await scrape(keyed, headers={"X-API-Key": "not-a-key"})
    assert status == 401
    sid, _ = await keyed.login()
    plain, _ = await keyed.admin_key(sid)
    status, _, text = await scrape(keyed, headers={"X-API-Key": plain})
    assert status == 200 and "podium_role" in parse(text)
    status, _, text = await scrape(keyed, params={"api_key": plain})  # as Prometheus' `params` sends it
    assert status == 200


async def test_metrics_off_and_bad_mode(db: Database, tmp_path: Path) -> None:
    node = NodeRuntime(db, "n9", "http://127.0.0.1:5599")
    routes = {r.resource.canonical for r in create_app(Settings(metrics="off"), node).router.routes() if r.resource}
    assert "/metrics" not in routes and "/health" in routes
    with pytest.raises(ConfigError, match="--metrics 'nope'"):
        Settings(metrics="nope").validate()


async def test_two_node_cluster_roles(tmp_path: Path) -> None:
    async with Cluster(tmp_path, size=2, env={"PODIUM_AGENT": "on"}) as c:
        await c.wait_all_up()
        primary = await c.wait_single_primary()
        satellite = next(n for n in c.nodes if n is not primary)
        assert c.http is not None
        http = c.http

        async def families(node: Node) -> dict[str, list[Sample]]:
            async with http.get(node.url + "/metrics") as resp:
                assert resp.status == 200
                return parse(await resp.text())

        async def agents_joined() -> bool:
            return all([value(await families(n), "podium_agents_connected") == 1 for n in c.nodes])

        await c.wait_for(agents_joined, timeout=60, interval=0.2)  # each node's own agent holds a socket there
        jobs = await Jobs.login(c, primary)
        job_id = await jobs.run(primary, await jobs.event(primary, "#!/bin/sh\necho done\n"))
        assert (await jobs.wait_job(primary, job_id))["code"] == 0
        status, reply = await c.call(satellite, "create_category", method="POST", title="x")
        assert reply["code"] == "master", (status, reply)

        async def ticked() -> bool:  # the scheduler runs on the primary only
            return value(await families(primary), "podium_scheduler_lag_seconds") > 0

        await c.wait_for(ticked, timeout=30, interval=0.2)
        on_primary, on_satellite = await families(primary), await families(satellite)
        assert value(on_primary, "podium_role", role="primary") == 1
        assert value(on_satellite, "podium_role", role="satellite") == 1
        assert value(on_satellite, "podium_role", role="primary") == 0
        assert value(on_satellite, "podium_epoch") == value(on_primary, "podium_epoch") >= 1
        assert value(on_satellite, "podium_failovers_total", change="became_primary") == 0
        assert value(on_satellite, "podium_requests_total", api="create_category", code="master") == 1
        assert value(on_satellite, "podium_store_rtt_seconds_count") >= 1  # its acquire polls
        assert not on_satellite["podium_jobs"]  # only the primary reports jobs
        assert on_primary["podium_jobs"]
        assert value(on_primary, "podium_dispatch_latency_seconds_count") == 1  # the job, placed on an agent
        assert value(on_primary, "podium_requests_total", api="run_event", code="0") == 1
