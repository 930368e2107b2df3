"""Timeline retention in the maintenance pass (cluster/maintenance.py) on a real primary, and its settings."""

from __future__ import annotations

import math
import time

import pytest

from api.cli import build_parser, settings_from
from api.server import timeline_retention_s
from api.settings import ConfigError
from cluster.maintenance import Maintenance, MaintenanceConfig
from storage.connection import Database
from storage.timeseries import DEFAULT_RETENTION_S, SYSTEMS, TimelineStore
from tests.authkit import Site

DAY = 86400
OFF = MaintenanceConfig(job_max_rows=0, activity_max_rows=0, max_sessions_per_user=0, batch=7, timeline_step=3)


def buckets(store: TimelineStore, system: str, first: float, last: float, now: float) -> int:
    """Items a list from `first` to `last` keeps at `now`."""
    div = SYSTEMS[system]
    rows = math.floor(last / div) - math.floor(first / div) + 1
    return max(min(rows, store.kept[system] - (math.floor(now / div) - math.floor(last / div))), 0)


async def test_maintenance_trims_every_server_to_its_retention(site: Site, db: Database) -> None:
    store = site.node.stores.timelines
    assert store.retention_s == DEFAULT_RETENTION_S
    now = time.time()
    # 20 servers (several ZSCAN pages and trim steps) that stopped 6.5 days ago after a day of samples,
    # one that stopped 100 days ago, one gone for 11 years, one reporting now.
    recent = [(now - 7.5 * DAY, now - 6.5 * DAY)]
    plan = {f"s{n}": recent for n in range(20)} | {"old": [(now - 101 * DAY, now - 100 * DAY)],
                                                   "gone": [(now - 4100 * DAY, now - 4100 * DAY + 60)],
                                                   "live": [(now - 3600, now)]}  # fmt: skip
    for server, spans in plan.items():
        for first, last in spans:
            assert await store.add(server, first, {"cpu": 1})
            assert await store.add(server, last, {"cpu": 2})
    expected = {server: {sys: buckets(store, sys, *plan[server][0], now) for sys in SYSTEMS} for server in plan}
    lengths = {server: {sys: len(await store.latest(server, sys, 50_000)) for sys in SYSTEMS} for server in plan}
    assert expected["s0"]["hourly"] < lengths["s0"]["hourly"] and expected["old"]["daily"] == 0
    assert expected["gone"] == {sys: 0 for sys in SYSTEMS} and expected["live"] == lengths["live"]

    removed = await Maintenance(site.node, OFF).run_once(now=now)

    after = {server: {sys: len(await store.latest(server, sys, 50_000)) for sys in SYSTEMS} for server in plan}
    assert after == expected
    assert removed.timeline_rows == sum(lengths[s][y] - expected[s][y] for s in plan for y in SYSTEMS)
    cursor, members = await store.servers(0, 1000)
    assert cursor == 0 and set(members) == set(plan) - {"gone"}
    assert (await Maintenance(site.node, OFF).run_once(now=now)).timeline_rows == 0
    assert (await store.latest("s0", "hourly", 1))[0]["totals"] == {"cpu": 2}  # the newest items stay


async def test_maintenance_on_a_satellite_trims_nothing(site: Site, db: Database) -> None:
    from cluster.node import NodeRuntime, NotPrimary
    from storage.stores import Stores

    other = NodeRuntime(db, "n2", "http://127.0.0.1:2", lease_ms=3000, stores=Stores.open(db))
    store = site.node.stores.timelines
    assert await store.add("s1", time.time() - 30 * DAY, {"cpu": 1})
    with pytest.raises(NotPrimary):
        await Maintenance(other, OFF).run_once()
    assert len(await store.latest("s1", "hourly", 10)) == 1


def test_retention_options_reach_the_store() -> None:
    args = build_parser().parse_args(["serve", "--timeline-hourly-days", "3", "--timeline-yearly-days", "400"])
    settings = settings_from(args, {"PODIUM_TIMELINE_DAILY_DAYS": "30"})
    assert timeline_retention_s(settings) == {"hourly": 3 * DAY, "daily": 30 * DAY, "monthly": 1826 * DAY,
                                              "yearly": 400 * DAY}  # fmt: skip
    assert timeline_retention_s(settings_from(build_parser().parse_args(["serve"]), {})) == DEFAULT_RETENTION_S
    with pytest.raises(ConfigError, match="--timeline-hourly-days 91: must be between 1 and 90"):
        settings_from(build_parser().parse_args(["serve", "--timeline-hourly-days", "91"]), {})
    with pytest.raises(ConfigError, match="PODIUM_TIMELINE_MONTHLY_DAYS=0: must be between 1 and 3660"):
        settings_from(build_parser().parse_args(["serve"]), {"PODIUM_TIMELINE_MONTHLY_DAYS": "0"})
