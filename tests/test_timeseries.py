"""Monitor time series (storage/timeseries.py): the four systems, merges, gap stubs, refusals, alert flags, reads by
offset, retention by age, and QuickMon samples; all dated explicitly (a fake clock) against a real valkey-server."""

from __future__ import annotations

import math
from typing import Any

import pytest

from storage import codec
from storage.connection import Database
from storage.errors import FencedError
from storage.fence import Fence
from storage.timeseries import (
    MAX_ROWS,
    QUICK_MAX,
    QUICK_TTL_S,
    SYSTEMS,
    QuickmonStore,
    TimelineStore,
)

T0 = 1_700_006_400.0  # a multiple of 43200: the start of a bucket in every system
MIN = 60


def bucket(date: float, system: str) -> int:
    return math.floor(date / SYSTEMS[system])


async def raw_state(db: Database, server: str) -> dict[str, Any]:
    """Everything a write could have touched, byte for byte."""
    k = db.keys
    lists = {sys: await db.client.lrange(k.timeline(server, sys), 0, -1) for sys in SYSTEMS}
    return {"lists": lists, "columns": await db.client.hgetall(k.timeline_columns),
            "zset": await db.client.zrange(k.timelines, 0, -1, withscores=True)}  # fmt: skip


async def everything(store: TimelineStore, server: str) -> dict[str, list[dict[str, Any]]]:
    return {sys: await store.latest(server, sys, MAX_ROWS) for sys in SYSTEMS}


async def primary_fence(db: Database) -> Fence:
    await db.client.set(db.keys.leader, "n1")
    await db.client.set(db.keys.epoch, "7")
    return Fence(db, "n1", 7)


# -- writing ------------------------------------------------------------------------------------------------------


async def test_one_sample_lands_in_every_system_in_its_bucket(db: Database) -> None:
    store = TimelineStore(db)
    date = T0 + 3 * 3600 + 125.5
    assert await store.add("s1", date, {"cpu": 12.5, "mem": 1024})
    for sys, div in SYSTEMS.items():
        ed = bucket(date, sys)
        assert await store.latest("s1", sys, 10) == [
            {"date": ed * div, "epoch_div": ed, "totals": {"cpu": 12.5, "mem": 1024}, "count": 1}
        ]
    assert await db.client.zscore(db.keys.timelines, "s1") == date
    assert await store.latest("s2", "hourly", 10) == []


async def test_samples_in_one_bucket_merge_and_hourly_keeps_each_minute(db: Database) -> None:
    store = TimelineStore(db)
    assert await store.add("s1", T0, {"cpu": 1.5, "mem": 100})
    assert await store.add("s1", T0 + MIN, {"cpu": 2.25, "load": 3})  # same 120 s bucket: merged there
    hourly = await store.latest("s1", "hourly", 10)
    assert [i["totals"] for i in hourly] == [{"cpu": 1.5, "mem": 100}, {"cpu": 2.25, "load": 3}]
    assert [i["count"] for i in hourly] == [1, 1]
    for sys in ("daily", "monthly", "yearly"):
        (item,) = await store.latest("s1", sys, 10)
        assert item["totals"] == {"cpu": 3.75, "mem": 100, "load": 3}
        assert item["count"] == 2
    assert await store.add("s1", T0 + 2 * MIN, {"cpu": 1})
    daily = await store.latest("s1", "daily", 10)
    assert [i["count"] for i in daily] == [2, 1]
    (monthly,) = await store.latest("s1", "monthly", 10)
    assert monthly["count"] == 3 and monthly["totals"]["cpu"] == 4.75


async def test_gaps_are_filled_with_stubs_in_xyops_shape(db: Database) -> None:
    store = TimelineStore(db)
    assert await store.add("s1", T0, {"cpu": 1})
    assert await store.add("s1", T0 + 5 * MIN, {"cpu": 2})
    hourly = await store.latest("s1", "hourly", 100)
    first = bucket(T0, "hourly")
    assert [i["epoch_div"] for i in hourly] == list(range(first, first + 6))
    assert hourly[1:5] == [{"epoch_div": first + n} for n in range(1, 5)]  # no date, no totals, as xyOps
    daily = await store.latest("s1", "daily", 100)
    assert daily[1] == {"epoch_div": bucket(T0, "daily") + 1} and len(daily) == 3
    assert len(await store.latest("s1", "monthly", 100)) == 1


async def test_a_second_sample_in_the_same_minute_writes_nothing(db: Database) -> None:
    store = TimelineStore(db)
    assert await store.add("s1", T0 + 10, {"cpu": 1})
    before = await raw_state(db, "s1")
    # The coarser systems would have merged it, and `fresh` would have taken a column: nothing may change.
    assert not await store.add("s1", T0 + 50, {"cpu": 5, "fresh": 1}, alerts=["a1"])
    assert await raw_state(db, "s1") == before
    (daily,) = await store.latest("s1", "daily", 10)
    assert daily["count"] == 1 and "alerts" not in daily


async def test_an_older_sample_is_refused_whole(db: Database) -> None:
    store = TimelineStore(db)
    assert await store.add("s1", T0 + 10 * MIN, {"cpu": 1})
    before = await raw_state(db, "s1")
    assert not await store.add("s1", T0 + 2 * MIN, {"cpu": 9})  # an older minute
    assert not await store.add("s1", T0 - 86400, {"cpu": 9})  # older in every system
    assert await raw_state(db, "s1") == before


async def test_a_gap_longer_than_the_retention_starts_the_list_afresh(db: Database) -> None:
    store = TimelineStore(db, {"hourly": 10 * MIN, "daily": 3600, "monthly": 86400, "yearly": 86400 * 10})
    assert await store.add("s1", T0, {"cpu": 1})
    assert await store.add("s1", T0 + 9 * MIN, {"cpu": 2})  # 9 buckets later: the old item is still kept
    assert len(await store.latest("s1", "hourly", 100)) == 10
    assert await store.add("s1", T0 + 19 * MIN, {"cpu": 3})  # 10 buckets later: nothing old would survive
    assert await store.latest("s1", "hourly", 100) == [
        {"date": bucket(T0 + 19 * MIN, "hourly") * 60, "epoch_div": bucket(T0 + 19 * MIN, "hourly"),
         "totals": {"cpu": 3}, "count": 1}
    ]  # fmt: skip
    daily = await store.latest("s1", "daily", 100)  # 30 buckets of retention: stubs in between
    assert [i["epoch_div"] - daily[0]["epoch_div"] for i in daily] == list(range(10))
    assert [i.get("count") for i in daily] == [1, None, None, None, 1, None, None, None, None, 1]


async def test_a_long_gap_is_filled_over_several_short_calls(db: Database) -> None:
    store = TimelineStore(db)

    async def evalsha_calls() -> int:
        stats = await db.client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    assert await store.add("s1", T0, {"cpu": 1})
    before = await evalsha_calls()
    assert await store.add("s1", T0 + 6 * 86400, {"cpu": 2})  # 8,639 + 4,319 + 143 + 11 stubs: three calls
    assert await evalsha_calls() == before + 3
    for sys in SYSTEMS:
        items = await store.latest("s1", sys, MAX_ROWS)
        first = bucket(T0, sys)
        assert [i["epoch_div"] for i in items] == list(range(first, bucket(T0 + 6 * 86400, sys) + 1))
        assert [i["totals"] for i in items if "totals" in i] == [{"cpu": 1}, {"cpu": 2}]
    # A refused sample writes no stubs either: half a gap filled is never left by a refusal.
    before_state = await raw_state(db, "s1")
    assert not await store.add("s1", T0 + 6 * 86400 + 10, {"cpu": 3})
    assert await raw_state(db, "s1") == before_state


async def test_stubs_left_at_the_end_by_an_unfinished_fill_take_a_later_sample(db: Database) -> None:
    store = TimelineStore(db)
    assert await store.add("s1", T0, {"cpu": 1})
    first = bucket(T0, "hourly")
    key = db.keys.timeline("s1", "hourly")
    await db.client.rpush(key, codec.pack([first + 1]), codec.pack([first + 2]))  # as a fill cut short leaves it
    assert await store.add("s1", T0 + 2 * MIN, {"cpu": 4})  # the last stub's bucket: not a second sample
    hourly = await store.latest("s1", "hourly", 10)
    merged = {"date": (first + 2) * 60, "epoch_div": first + 2, "totals": {"cpu": 4}, "count": 1}
    assert hourly[1:] == [{"epoch_div": first + 1}, merged]
    assert not await store.add("s1", T0 + 2 * MIN + 30, {"cpu": 5})


async def test_alerts_ride_with_a_sample_and_can_be_flagged_later(db: Database) -> None:
    store = TimelineStore(db)
    assert await store.add("s1", T0, {"cpu": 1}, alerts=["a1"])
    assert await store.add("s1", T0 + 3 * MIN, {"cpu": 2})
    for sys in SYSTEMS:
        assert (await store.latest("s1", sys, 100))[0]["alerts"] == {"a1": True}
    await store.flag_alerts("s1", T0 + 5, ["a2", "a1"])  # an alert that fired after the first sample's write
    await store.flag_alerts("s1", T0 + MIN, ["a3"])  # a stub in hourly: left alone; the daily bucket is T0's
    hourly = await store.latest("s1", "hourly", 100)
    assert hourly[0]["alerts"] == {"a1": True, "a2": True}
    assert hourly[1] == {"epoch_div": bucket(T0, "hourly") + 1}
    assert "alerts" not in hourly[3]
    (monthly,) = await store.latest("s1", "monthly", 100)
    assert monthly["alerts"] == {"a1": True, "a2": True, "a3": True}
    assert await store.add("s1", T0 + 3 * MIN + 30 + 3600, {"cpu": 1}, alerts=["a4"])
    await store.flag_alerts("s1", T0 + 10 * 86400, ["a9"])  # after the last bucket: nothing
    await store.flag_alerts("s1", T0 - 10 * 86400, ["a9"])  # before the first: nothing
    assert "a9" not in str(await everything(store, "s1"))
    (yearly,) = await store.latest("s1", "yearly", 100)
    assert yearly["alerts"] == {"a1": True, "a2": True, "a3": True, "a4": True}


async def test_bad_input_is_refused_before_anything_is_written(db: Database) -> None:
    store = TimelineStore(db)
    for call in (
        store.add("S 1", T0, {"cpu": 1}),
        store.add("s1", T0, {"cpu": math.nan}),
        store.add("s1", T0, {"cpu": "12"}),  # type: ignore[dict-item]  # what a caller must not pass
        store.add("s1", T0, {"x" * 129: 1}),
        store.add("s1", T0, {f"m{i}": 1 for i in range(501)}),
        store.add("s1", -5, {"cpu": 1}),
        store.add("s1", T0, {"cpu": 1}, alerts=[""]),
        store.latest("s1", "weekly", 10),
        store.latest("s1", "hourly", MAX_ROWS + 1),
        store.historical("s1", "hourly", math.inf, 10),
    ):
        with pytest.raises(ValueError):
            await call
    assert await raw_state(db, "s1") == {"lists": {sys: [] for sys in SYSTEMS}, "columns": {}, "zset": []}


async def test_items_name_monitors_by_a_shared_column(db: Database) -> None:
    store = TimelineStore(db)
    assert await store.add("s1", T0, {"cpu_usage": 1, "mem_used": 2})
    assert await store.add("s2", T0, {"mem_used": 3, "net_conns": 4})
    columns = await db.client.hgetall(db.keys.timeline_columns)
    assert columns == {b"cpu_usage": b"0", b"mem_used": b"1", b"net_conns": b"2"}
    raw = await db.client.lindex(db.keys.timeline("s2", "hourly"), -1)
    assert isinstance(raw, bytes) and codec.unpack(raw) == [bucket(T0, "hourly"), 1, [1, 3, 2, 4]]
    assert (await store.latest("s2", "hourly", 1))[0]["totals"] == {"mem_used": 3, "net_conns": 4}


# -- reading ------------------------------------------------------------------------------------------------------


async def test_latest_returns_the_last_items_oldest_first(db: Database) -> None:
    store = TimelineStore(db)
    for n in range(5):
        assert await store.add("s1", T0 + n * MIN, {"n": n})
    assert [i["totals"]["n"] for i in await store.latest("s1", "hourly", 3)] == [2, 3, 4]
    assert [i["totals"]["n"] for i in await store.latest("s1", "hourly", 50)] == [0, 1, 2, 3, 4]
    assert await store.latest("s1", "hourly", 0) == []


async def test_historical_offsets_as_xyops(db: Database) -> None:
    store = TimelineStore(db)
    for n in range(10):
        assert await store.add("s1", T0 + n * MIN, {"n": n})

    async def ns(date: float, limit: int) -> list[int]:
        return [i["totals"]["n"] for i in await store.historical("s1", "hourly", date, limit)]

    assert await ns(T0 + 3 * MIN, 4) == [3, 4, 5, 6]
    assert await ns(T0 + 3 * MIN + 59, 2) == [3, 4]  # any date in the bucket
    assert await ns(T0 - 2 * MIN, 4) == [0, 1]  # before the first item: the limit shrinks by the offset
    assert await ns(T0 - 4 * MIN, 4) == []  # entirely before
    assert await ns(T0 + 8 * MIN, 10) == [8, 9]
    assert await ns(T0 + 10 * MIN, 5) == []  # past the end
    assert await store.historical("s1", "hourly", T0, 0) == []
    assert await store.historical("nobody", "hourly", T0, 5) == []
    daily = await store.historical("s1", "daily", T0 + 4 * MIN, 2)
    assert [(i["epoch_div"], i["count"]) for i in daily] == [(bucket(T0, "daily") + 2, 2), (bucket(T0, "daily") + 3, 2)]


# -- retention ----------------------------------------------------------------------------------------------------


async def test_trim_keeps_each_systems_retention(db: Database) -> None:
    store = TimelineStore(db, {"hourly": 10 * MIN, "daily": 20 * MIN, "monthly": 86400, "yearly": 86400 * 10})
    for n in range(30):
        assert await store.add("s1", T0 + n * MIN, {"n": n})
    last = T0 + 29 * MIN
    fence = await primary_fence(db)
    assert await store.trim(["s1"], fence=fence, now=last) == (30 - 10) + (15 - 10)
    hourly = await store.latest("s1", "hourly", 100)
    assert [i["totals"]["n"] for i in hourly] == list(range(20, 30))
    assert len(await store.latest("s1", "daily", 100)) == 10
    assert len(await store.latest("s1", "monthly", 100)) == 1
    assert [i["totals"]["n"] for i in await store.historical("s1", "hourly", T0 + 25 * MIN, 2)] == [25, 26]
    assert await store.trim(["s1"], fence=fence, now=last) == 0
    assert await store.add("s1", last + MIN, {"n": 30})  # writes go on after a trim


async def test_trim_ages_out_a_server_that_stopped_reporting(db: Database) -> None:
    store = TimelineStore(db, {"hourly": 10 * MIN, "daily": 20 * MIN, "monthly": 86400, "yearly": 86400 * 10})
    for n in range(5):
        assert await store.add("s1", T0 + n * MIN, {"n": n})
        assert await store.add("s2", T0 + n * MIN, {"n": n})
    fence = await primary_fence(db)
    last = T0 + 4 * MIN
    assert await store.trim(["s1"], fence=fence, now=last + 7 * MIN) == 2  # 10 buckets up to now: 3 remain
    assert [i["totals"]["n"] for i in await store.latest("s1", "hourly", 100)] == [2, 3, 4]
    # Two days on, the hourly, daily and monthly (1 day) lists are past their retention: gone, keys and all.
    assert await store.trim(["s1"], fence=fence, now=last + 2 * 86400) == 3 + 3 + 1
    assert await db.client.exists(*(db.keys.timeline("s1", sys) for sys in ("hourly", "daily", "monthly"))) == 0
    assert len(await store.latest("s1", "yearly", 10)) == 1
    assert await db.client.zscore(db.keys.timelines, "s1") == last
    assert await store.trim(["s1"], fence=fence, now=last + 11 * 86400) == 1  # nothing left anywhere
    assert await db.client.zscore(db.keys.timelines, "s1") is None
    assert [i["totals"]["n"] for i in await store.latest("s2", "hourly", 100)] == [0, 1, 2, 3, 4]  # untouched


async def test_trim_is_fenced(db: Database) -> None:
    store = TimelineStore(db, {"hourly": 2 * MIN, "daily": 3600, "monthly": 86400, "yearly": 86400 * 10})
    for n in range(5):
        assert await store.add("s1", T0 + n * MIN, {"n": n})
    await primary_fence(db)
    before = await raw_state(db, "s1")
    with pytest.raises(FencedError):
        await store.trim(["s1"], fence=Fence(db, "n2", 7), now=T0 + 4 * MIN)
    assert await raw_state(db, "s1") == before


async def test_servers_are_listed_without_a_keyspace_scan_and_delete_removes_all(db: Database) -> None:
    store = TimelineStore(db)
    for n in range(300):
        assert await store.add(f"s{n}", T0, {"cpu": n})
    seen: set[str] = set()
    cursor = 0
    while True:
        cursor, page = await store.servers(cursor, 50)
        seen.update(page)
        if not cursor:
            break
    assert seen == {f"s{n}" for n in range(300)}
    await store.delete("s7")
    assert (await raw_state(db, "s7"))["lists"] == {sys: [] for sys in SYSTEMS}
    assert await db.client.zscore(db.keys.timelines, "s7") is None
    assert await store.latest("s8", "hourly", 1) != []
    assert await store.add("s7", T0, {"cpu": 1})  # a deleted server starts again from nothing


# -- QuickMon -----------------------------------------------------------------------------------------------------


async def test_quickmon_keeps_the_last_samples_oldest_first(db: Database) -> None:
    quick = QuickmonStore(db)
    assert await quick.add_many([("s1", {"date": 1000 + n, "_qm_cpu": n}) for n in range(QUICK_MAX + 10)]) == 70
    got = (await quick.get(["s1"]))["s1"]
    assert [s["_qm_cpu"] for s in got] == list(range(10, QUICK_MAX + 10))
    assert [s["date"] for s in got] == list(range(1010, 1000 + QUICK_MAX + 10))
    assert await quick.get(["s1", "s9"]) == {"s1": got, "s9": []}
    assert 0 < await db.client.ttl(db.keys.quickmon("s1")) <= QUICK_TTL_S  # a server that goes leaves nothing


async def test_quickmon_dates_strictly_increase(db: Database) -> None:
    quick = QuickmonStore(db)
    # As xyOps: dated at the last one = moved 1 s on; older than the last = dropped.
    dates = [100, 100, 100, 101, 101, 103.5]
    samples = [("s1", {"date": date, "v": n}) for n, date in enumerate(dates, 1)]
    assert await quick.add_many(samples) == 4
    got = [(s["date"], s["v"]) for s in (await quick.get(["s1"]))["s1"]]
    assert got == [(100, 1), (101, 2), (102, 4), (103.5, 6)]  # never more than 1 s ahead of its own date
    assert await quick.add_many([("s1", {"date": 50, "v": 7})]) == 0


async def test_quickmon_batch_is_one_script_call(db: Database) -> None:
    quick = QuickmonStore(db)

    async def evalsha_calls() -> int:
        stats = await db.client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    await quick.add_many([("s0", {"date": 1})])  # the script is loaded once
    before = await evalsha_calls()
    batch = [(f"s{n}", {"date": 2.0 + n / 1000, "_qm_mem": n * 1024, "_qm_cpu": 0.5}) for n in range(1000)]
    assert await quick.add_many(batch) == 1000
    assert await evalsha_calls() == before + 1
    got = await quick.get([f"s{n}" for n in range(1000)])
    assert got["s999"] == [{"date": 2.999, "_qm_mem": 999 * 1024, "_qm_cpu": 0.5}]
    await quick.delete("s999")
    assert (await quick.get(["s999"]))["s999"] == []


async def test_quickmon_refuses_bad_samples_whole(db: Database) -> None:
    quick = QuickmonStore(db)
    for batch in ([("s1", {"date": 1}), ("bad id", {"date": 2})], [("s1", {"v": 1})],
                  [("s1", {"date": "x"})], [("s1", {"date": 1, "v": "x" * 5000})],
                  [("s1", {"date": 1, **{f"k{i}": i for i in range(64)}})]):  # fmt: skip
        with pytest.raises(ValueError):
            await quick.add_many(batch)
    assert await db.client.exists(db.keys.quickmon("s1")) == 0
    assert await quick.add_many([]) == 0 and await quick.get([]) == {}
