"""The scheduler, tick by tick: explicit seconds against a real node on a real server, no wall clock.

Each test drives `Scheduler.tick(now_s)` by hand. Jobs launched by the scheduler complete at once (no
agent is connected) and are found through the jobs index; delayed jobs stay in the active set.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from cluster.election import Election
from cluster.node import NodeRuntime, NotPrimary
from cluster.scheduler import Scheduler, SchedulerConfig
from cluster.triggers import validate_triggers
from storage.connection import Database
from storage.errors import FencedError
from storage.families import CATEGORIES, EVENTS, TAGS
from storage.ids import generate_id
from storage.lease import LeaseStore
from tests.authkit import Site, wait_until

Record = dict[str, Any]
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a Thursday: the start of a minute, an hour and a day
CONFIG = SchedulerConfig(stagger_ms=0)
GRACE_REASON = "missed by more than the grace period"


def every(seconds: int, start: int = T0, **extra: Any) -> Record:
    return {"type": "interval", "enabled": True, "start": start, "duration": seconds, **extra}


def schedule(**fields: Any) -> Record:
    return {"type": "schedule", "enabled": True, **fields}


async def make_event(site: Site, title: str, triggers: list[Record], **fields: Any) -> Record:
    """Store an event as create_event would (validated triggers, system fields) through the fence."""
    now = int(time.time())
    record: Record = {
        "id": generate_id("e"), "title": title, "enabled": True, "category": "general", "plugin": "shellplug",
        "targets": ["main"], "algo": "random", "params": {"script": "#!/bin/sh\necho hello"}, "fields": [],
        "tags": [], "limits": [], "actions": [], "notes": "", "icon": "", "username": "admin",
        "created": now, "modified": now, "revision": 1,
    }  # fmt: skip
    record.update(fields)
    record["triggers"] = validate_triggers(triggers)
    node = site.node
    return await node.stores.defs.create(node.fence(), EVENTS, record)


async def jobs_of(site: Site, event_id: str) -> list[Record]:
    """Every job of an event, finished (from the index) and live, in scheduled order."""
    stores = site.node.stores
    final, total = await stores.jobs.search(f"event:{event_id}", offset=0, limit=10_000)
    assert total == len(final)
    live = [job for job in await stores.jobs.active() if job.get("event") == event_id]
    return sorted([*final, *live], key=lambda job: (job["now"], job["id"]))


async def seconds_of(site: Site, event_id: str) -> list[int]:
    return [int(job["now"]) for job in await jobs_of(site, event_id)]


async def warnings_for(site: Site, event_id: str) -> list[Record]:
    rows, total = await site.node.stores.activity.search("action:warning", 0, 1000)
    assert total == len(rows)
    return [row for row in rows if (row.get("event") or {}).get("id") == event_id]


async def cursor(site: Site, event_id: str) -> int | None:
    return (await site.node.stores.jobs.cursors()).get(event_id)


async def run(scheduler: Scheduler, first: int, last: int) -> list[int]:
    """Tick every second from first to last (inclusive); the number launched at each."""
    return [await scheduler.tick(now) for now in range(first, last + 1)]


# -- launching ------------------------------------------------------------------------------------


async def test_interval_every_second_launches_one_job_per_second(site: Site) -> None:
    sid, _ = await site.login()
    status, data = await site.call("create_event", {
        "title": "Every second", "enabled": True, "category": "general", "plugin": "shellplug",
        "targets": ["main"], "algo": "random", "params": {"script": "#!/bin/sh\necho tick"},
        "triggers": [every(1)],
    }, headers={"X-Session-ID": sid})  # fmt: skip
    assert (status, data["code"]) == (200, 0), data
    event_id = data["event"]["id"]
    scheduler = Scheduler(site.node, CONFIG)

    assert await run(scheduler, T0 - 2, T0 + 9) == [0, 0] + [1] * 10  # nothing before the interval starts

    jobs = await jobs_of(site, event_id)
    assert [int(job["now"]) for job in jobs] == list(range(T0, T0 + 10))
    assert {job["source"] for job in jobs} == {"scheduler"}
    assert all(job["event"] == event_id and job["state"] == "complete" for job in jobs)
    assert await cursor(site, event_id) == T0 + 9
    db = site.node.db
    for job in jobs:  # each run's identity (event, second) is claimed by exactly its job
        claimed = await db.client.get(db.keys.sched_claim(event_id, int(job["now"])))
        assert claimed in (job["id"], job["id"].encode())


async def test_ticking_the_same_second_again_launches_nothing(site: Site) -> None:
    event = await make_event(site, "Every second", [every(1)])
    scheduler = Scheduler(site.node, CONFIG)
    assert await scheduler.tick(T0 + 5) == 1
    assert await scheduler.tick(T0 + 5) == 0
    assert await scheduler.tick(T0 + 4) == 0  # a clock stepping back replays nothing
    assert await Scheduler(site.node, CONFIG).tick(T0 + 5) == 0  # nor does a fresh scheduler
    assert await scheduler.tick(T0 + 6) == 1
    assert await seconds_of(site, event["id"]) == [T0 + 5, T0 + 6]
    assert await warnings_for(site, event["id"]) == []


async def test_new_primary_resumes_from_the_cursors(site: Site) -> None:
    events = [await make_event(site, f"Every second {n}", [every(1)]) for n in range(3)]
    old = Scheduler(site.node, CONFIG)
    assert await run(old, T0, T0 + 4) == [3] * 5

    # The old primary stops ticking at T0+4; the new one first ticks 30 s later, inside the grace period.
    new = Scheduler(site.node, CONFIG)
    assert await new.tick(T0 + 34) == 3 * 30
    assert await old.tick(T0 + 34) == 0  # every slot is claimed: nothing twice
    assert await run(new, T0 + 35, T0 + 36) == [3, 3]
    for event in events:
        assert await seconds_of(site, event["id"]) == list(range(T0, T0 + 37))
        assert await cursor(site, event["id"]) == T0 + 36
        assert await warnings_for(site, event["id"]) == []


async def test_new_event_gets_a_cursor_before_its_first_launch(site: Site) -> None:
    # An event whose first slot is still ahead is recorded at its first tick, so a failover before that
    # slot cannot lose it.
    event = await make_event(site, "Hourly", [schedule(minutes=[0])])
    assert await Scheduler(site.node, CONFIG).tick(T0 - 10) == 0
    assert await cursor(site, event["id"]) == T0 - 11
    assert await Scheduler(site.node, CONFIG).tick(T0 + 20) == 1  # another primary, 30 s later
    assert await seconds_of(site, event["id"]) == [T0]


async def test_an_edited_event_is_looked_at_again_from_its_cursor(site: Site) -> None:
    node = site.node
    event = await make_event(site, "Half past", [schedule(minutes=[30])])
    scheduler = Scheduler(node, CONFIG)
    assert await run(scheduler, T0, T0 + 5) == [0] * 6  # nothing due; the cursor stays at T0-1
    edited = {**event, "triggers": validate_triggers([every(1)]), "revision": 2, "modified": event["modified"] + 1}
    await node.stores.defs.replace(node.fence(), EVENTS, edited, 1)
    # The new triggers are due since T0: within the grace period, so all of it is launched now.
    assert await scheduler.tick(T0 + 6) == 7
    assert await seconds_of(site, event["id"]) == list(range(T0, T0 + 7))


async def test_a_cursor_moved_elsewhere_is_respected(site: Site) -> None:
    sid, _ = await site.login()
    event = await make_event(site, "Every second", [every(1)])
    scheduler = Scheduler(site.node, CONFIG)
    assert await run(scheduler, T0, T0 + 1) == [1, 1]
    # update_event's update_state moves the cursor forward (as a catch-up seed would).
    status, data = await site.call("update_event", {"id": event["id"], "update_state": {"cursor": T0 + 10}},
                                   headers={"X-Session-ID": sid})  # fmt: skip
    assert (status, data["code"]) == (200, 0), data
    assert await run(scheduler, T0 + 2, T0 + 11) == [0] * 9 + [1]
    assert await seconds_of(site, event["id"]) == [T0, T0 + 1, T0 + 11]


# -- skipping ---------------------------------------------------------------------------------------


async def test_slots_older_than_the_grace_period_are_skipped_and_logged(site: Site) -> None:
    event = await make_event(site, "Every second", [every(1)])
    assert await Scheduler(site.node, CONFIG).tick(T0) == 1

    # A failover that took 40 s, with a grace period of 10 s: slots missed by up to 10 s are launched.
    assert await Scheduler(site.node, SchedulerConfig(stagger_ms=0, grace_s=10)).tick(T0 + 40) == 11
    assert await seconds_of(site, event["id"]) == [T0, *range(T0 + 30, T0 + 41)]
    assert await cursor(site, event["id"]) == T0 + 40

    sid, _ = await site.login()
    status, data = await site.call("search_activity", {"query": "action:warning", "limit": 50},
                                   headers={"X-Session-ID": sid})  # fmt: skip
    assert (status, data["code"]) == (200, 0), data
    (record,) = [row for row in data["rows"] if row["event"]["id"] == event["id"]]
    assert record["action"] == "warning"
    assert record["reason"] == GRACE_REASON
    assert record["skipped"] == list(range(T0 + 1, T0 + 30))
    assert event["id"] in record["keywords"]
    assert "Skipped 29 scheduled launch(es)" in record["description"]


async def test_grace_period_zero_launches_the_current_second_only(site: Site) -> None:
    event = await make_event(site, "Every second", [every(1)])
    scheduler = Scheduler(site.node, SchedulerConfig(stagger_ms=0, grace_s=0))
    assert await run(scheduler, T0, T0 + 1) == [1, 1]
    assert await scheduler.tick(T0 + 5) == 1
    assert await seconds_of(site, event["id"]) == [T0, T0 + 1, T0 + 5]
    (record,) = await warnings_for(site, event["id"])
    assert (record["reason"], record["skipped"]) == (GRACE_REASON, [T0 + 2, T0 + 3, T0 + 4])


async def test_catchup_replays_every_missed_slot_beyond_the_grace_period(site: Site) -> None:
    catchup = await make_event(site, "Catch-up", [schedule(), {"type": "catchup", "enabled": True}])
    plain = await make_event(site, "Plain", [schedule()])
    scheduler = Scheduler(site.node, CONFIG)
    assert await scheduler.tick(T0) == 2

    # An hour without a primary: the catch-up event replays all 60 minutes, the plain one the last two.
    assert await Scheduler(site.node, CONFIG).tick(T0 + 3600) == 60 + 2
    assert await seconds_of(site, catchup["id"]) == list(range(T0, T0 + 3601, 60))
    assert await warnings_for(site, catchup["id"]) == []
    assert await seconds_of(site, plain["id"]) == [T0, T0 + 3540, T0 + 3600]  # 60 s late is within the grace
    (record,) = await warnings_for(site, plain["id"])
    assert record["reason"] == GRACE_REASON
    assert record["skipped"] == list(range(T0 + 60, T0 + 3480 + 1, 60))


async def test_disabled_scheduler_skips_slots_with_a_reason(site: Site) -> None:
    event = await make_event(site, "Every second", [every(1)])
    node = site.node
    scheduler = Scheduler(node, CONFIG)
    assert await scheduler.tick(T0) == 1

    await node.stores.state.update(node.fence(), {"scheduler.enabled": False})
    assert await run(scheduler, T0 + 1, T0 + 3) == [0, 0, 0]
    records = await warnings_for(site, event["id"])
    assert len(records) == 3
    assert {r["reason"] for r in records} == {"the scheduler is disabled"}
    assert sorted(s for r in records for s in r["skipped"]) == [T0 + 1, T0 + 2, T0 + 3]
    assert await cursor(site, event["id"]) == T0 + 3  # the skipped slots are dealt with

    await node.stores.state.update(node.fence(), {"scheduler.enabled": True})
    assert await scheduler.tick(T0 + 4) == 1  # resumes at the next slot; the skipped ones stay skipped
    assert await seconds_of(site, event["id"]) == [T0, T0 + 4]


async def test_disabled_category_skips_and_disabled_event_is_ignored(site: Site) -> None:
    node = site.node
    now = int(time.time())
    await node.stores.defs.create(node.fence(), CATEGORIES, {
        "id": "paused", "title": "Paused", "enabled": False, "sort_order": 1, "color": "plain", "icon": "",
        "limits": [], "actions": [], "notes": "", "username": "admin", "created": now, "modified": now,
        "revision": 1,
    })  # fmt: skip
    in_paused = await make_event(site, "In a disabled category", [schedule()], category="paused")
    disabled = await make_event(site, "Disabled", [schedule()], enabled=False)

    assert await Scheduler(node, CONFIG).tick(T0) == 0
    assert await seconds_of(site, in_paused["id"]) == []
    (record,) = await warnings_for(site, in_paused["id"])
    assert record["reason"] == "Category is disabled or missing: paused"
    assert record["skipped"] == [T0]
    assert await cursor(site, in_paused["id"]) == T0
    # A disabled event is not scheduled at all: no job, no warning, no cursor.
    assert await seconds_of(site, disabled["id"]) == []
    assert await warnings_for(site, disabled["id"]) == []
    assert await cursor(site, disabled["id"]) is None


async def test_max_jobs_per_min_brake_skips_the_rest(site: Site) -> None:
    events = [await make_event(site, f"Every minute {n}", [schedule()]) for n in range(8)]
    scheduler = Scheduler(site.node, SchedulerConfig(stagger_ms=0, max_jobs_per_min=5))
    assert await scheduler.tick(T0) == 5
    launched = [e for e in events if await seconds_of(site, e["id"]) == [T0]]
    braked = [e for e in events if e not in launched]
    assert len(launched) == 5 and len(braked) == 3
    for event in braked:
        assert await seconds_of(site, event["id"]) == []
        (record,) = await warnings_for(site, event["id"])
        assert record["reason"] == "max_jobs_per_min (5) reached"
        assert record["skipped"] == [T0]
        assert await cursor(site, event["id"]) == T0
    for event in launched:
        assert await warnings_for(site, event["id"]) == []
    # Still inside the same real minute: the next minute's slots are braked too.
    assert await scheduler.tick(T0 + 60) == 0
    assert sum([len(await warnings_for(site, e["id"])) for e in events]) == 3 + 8


# -- trigger kinds ------------------------------------------------------------------------------------


async def test_schedule_every_minute_fires_at_second_zero(site: Site) -> None:
    event = await make_event(site, "Every minute", [schedule()])
    assert sum(await run(Scheduler(site.node, CONFIG), T0 - 1, T0 + 121)) == 3
    assert await seconds_of(site, event["id"]) == [T0, T0 + 60, T0 + 120]


async def test_weekday_schedule_in_a_time_zone(site: Site) -> None:
    event = await make_event(site, "New York mornings", [
        schedule(weekdays=[1, 2, 3, 4, 5], hours=[9], minutes=[30], timezone="America/New_York")])  # fmt: skip
    thursday = T0 + 14 * 3600 + 30 * 60  # 09:30 EST on Thursday 2026-01-01 is 14:30 UTC
    scheduler = Scheduler(site.node, CONFIG)
    assert await run(scheduler, thursday - 1, thursday + 1) == [0, 1, 0]
    saturday = thursday + 2 * 86400
    assert await run(scheduler, saturday - 1, saturday + 1) == [0, 0, 0]
    assert await seconds_of(site, event["id"]) == [thursday]
    (record,) = await warnings_for(site, event["id"])  # Friday's run fell in the gap between the ticks
    assert record["skipped"] == [thursday + 86400]
    assert record["reason"] == GRACE_REASON


async def test_precision_trigger_launches_at_each_listed_second(site: Site) -> None:
    event = await make_event(site, "Precise", [schedule(), {"type": "precision", "enabled": True, "seconds": [0, 30]}])
    assert sum(await run(Scheduler(site.node, CONFIG), T0 - 1, T0 + 61)) == 3
    assert await seconds_of(site, event["id"]) == [T0, T0 + 30, T0 + 60]


async def test_blackout_and_range_triggers(site: Site) -> None:
    # Both work on whole minutes, inclusive: the blackout covers T0+60..T0+179, the range T0+60..T0+119.
    blackout = await make_event(site, "Blackout", [
        every(1), {"type": "blackout", "enabled": True, "start": T0 + 60, "end": T0 + 120}])  # fmt: skip
    ranged = await make_event(site, "Range", [
        every(1), {"type": "range", "enabled": True, "start": T0 + 60, "end": T0 + 60}])  # fmt: skip
    await run(Scheduler(site.node, CONFIG), T0 + 55, T0 + 185)
    assert await seconds_of(site, blackout["id"]) == [*range(T0 + 55, T0 + 60), *range(T0 + 180, T0 + 186)]
    assert await seconds_of(site, ranged["id"]) == list(range(T0 + 60, T0 + 120))
    # Slots removed by a blackout or outside a range are not "missed": nothing is logged.
    assert await warnings_for(site, blackout["id"]) == []
    assert await warnings_for(site, ranged["id"]) == []


async def test_trigger_params_tags_and_data_reach_the_job(site: Site) -> None:
    for tag in ("base", "nightly"):  # a finished job keeps only tags that exist
        await site.node.stores.defs.create(site.node.fence(), TAGS, {"id": tag, "title": tag.title()})
    event = await make_event(site, "With payload", [
        every(60, start=T0 + 30, params={"foo": "from trigger", "bar": 7}, tags=["nightly"], data={"region": "eu"}),
        schedule(minutes=[1], data=["a", "b"]),
    ], params={"script": "#!/bin/sh\necho hi", "foo": "from event"}, tags=["base"])  # fmt: skip
    assert sum(await run(Scheduler(site.node, CONFIG), T0 + 29, T0 + 60)) == 2
    interval, scheduled = await jobs_of(site, event["id"])
    assert (interval["now"], scheduled["now"]) == (T0 + 30, T0 + 60)
    assert interval["params"] == {"script": "#!/bin/sh\necho hi", "foo": "from trigger", "bar": 7}
    assert interval["tags"] == ["_error", "_last", "base", "nightly"]  # _error: no server could run it
    assert interval["input"] == {"data": {"region": "eu"}}
    assert scheduled["params"] == {"script": "#!/bin/sh\necho hi", "foo": "from event"}
    assert scheduled["tags"] == ["_error", "_last", "base"]
    assert scheduled["input"] == {"data": {"items": ["a", "b"]}}  # an array goes under `items`


async def test_two_triggers_on_one_second_make_one_run(site: Site) -> None:
    # A run is identified by (event, second): when two triggers fire on the same second, the first
    # (by position) launches and the other finds the slot claimed.
    event = await make_event(site, "Twice at 00:01", [
        every(60, params={"by": "interval"}), schedule(minutes=[1], params={"by": "schedule"})])  # fmt: skip
    assert await run(Scheduler(site.node, CONFIG), T0 + 59, T0 + 60) == [0, 1]
    (job,) = await jobs_of(site, event["id"])
    assert (job["now"], job["params"]["by"]) == (T0 + 60, "interval")


async def test_delay_trigger_starts_the_job_in_start_delay(site: Site) -> None:
    # T0 is in the past: the delay must outlast the test, or the dispatcher rightly starts the job at once.
    delay = int(time.time()) - T0 + 3600
    event = await make_event(site, "Delayed", [schedule(), {"type": "delay", "enabled": True, "duration": delay}])
    assert await Scheduler(site.node, CONFIG).tick(T0) == 1
    (job,) = await jobs_of(site, event["id"])
    assert job["state"] == "start_delay"
    assert job["now"] == T0
    assert job["until"] == T0 + delay
    assert job["id"] in {j["id"] for j in await site.node.stores.jobs.active()}


async def test_startup_trigger_launches_once_when_primary(site: Site) -> None:
    event = await make_event(site, "On startup", [{"type": "startup", "enabled": True}])
    other = await make_event(site, "Manual only", [{"type": "manual", "enabled": True}])
    scheduler = Scheduler(site.node, CONFIG)
    await scheduler.startup_launches()
    (job,) = await jobs_of(site, event["id"])
    assert job["source"] == "startup"
    assert await jobs_of(site, other["id"]) == []
    # Its own claim, and the schedule's cursor untouched: a scheduled run in that second still launches.
    keys = site.node.db.keys
    assert await site.node.db.client.exists(keys.sched_claim(f"{event['id']}:startup", int(job["now"])))
    assert await cursor(site, event["id"]) is None
    # Startup-only events have no timing: ticks leave them alone.
    assert await scheduler.tick(T0) == 0
    assert len(await jobs_of(site, event["id"])) == 1


# -- fencing --------------------------------------------------------------------------------------


async def settled_image(db: Database) -> dict[str, bytes]:
    """store_image once the live primary has stopped changing the store (two images 0.3 s apart agree)."""
    deadline = time.monotonic() + 15
    image = await store_image(db)
    while True:
        await asyncio.sleep(0.3)
        again = await store_image(db)
        if again == image or time.monotonic() > deadline:
            return again
        image = again


async def store_image(db: Database) -> dict[str, bytes]:
    """Every key of the cluster and its serialized value, except the lease and the node registry."""
    k = db.keys
    moving = {k.leader, k.epoch, k.nodes}
    image: dict[str, bytes] = {}
    async for raw in db.client.scan_iter(match=f"{k.cluster}:*", count=1000):
        key = raw.decode()
        if key in moving or key.startswith((k.node(""), k.probe(""))):
            continue
        dumped = await db.client.dump(key)
        if dumped is not None:
            image[key] = dumped
    return image


async def take_lease(holder: NodeRuntime, taker: Election) -> None:
    """Make `taker` primary: `holder` gives the lease back, `taker` takes it (retried if `holder` wins)."""
    deadline = time.monotonic() + 15
    while not taker.is_primary:
        assert time.monotonic() < deadline, "the lease never changed hands"
        await holder.election.release()
        await taker.step()
        if not taker.is_primary:
            await asyncio.sleep(0.05)


async def test_deposed_primary_cannot_launch_or_write(site: Site, db: Database) -> None:
    event = await make_event(site, "Every second", [every(1)])
    assert await Scheduler(site.node, CONFIG).tick(T0) == 1

    # A node whose own clock stands still: once primary, it keeps believing so, as after a SIGSTOP.
    ghost = NodeRuntime(db, "ghost", "http://127.0.0.1:9", stores=site.node.stores)
    ghost.election = Election(LeaseStore(db), "ghost", lease_ms=1500, clock=lambda: 1000.0)
    await take_lease(site.node, ghost.election)
    ghost_epoch = ghost.epoch

    # While the ghost holds the lease, the old primary knows it is not primary and refuses to act.
    image = await store_image(db)
    assert not site.node.is_primary
    with pytest.raises(NotPrimary):
        await Scheduler(site.node, CONFIG).tick(T0 + 1)
    assert await store_image(db) == image

    # The ghost's lease runs out; the site's node is elected again, at a newer epoch.
    await wait_until(lambda: site.node.is_primary, "the site's node primary again", timeout=15)
    assert site.node.epoch > ghost_epoch
    assert ghost.is_primary  # it still thinks so ...
    image = await settled_image(db)  # the new primary's dispatcher may still be finishing the first job
    with pytest.raises(FencedError):  # ... but every write it tries is refused by the fence
        await Scheduler(ghost, CONFIG).tick(T0 + 3)
    assert await store_image(db) == image
    late = await make_event(site, "Created after the failover", [every(1)])  # its first tick writes a cursor
    image = await settled_image(db)
    with pytest.raises(FencedError):
        await Scheduler(ghost, CONFIG).tick(T0 + 3)
    assert await store_image(db) == image
    assert await seconds_of(site, event["id"]) == [T0]

    # The real primary launches what the deposed one could not.
    assert await Scheduler(site.node, CONFIG).tick(T0 + 3) == 3 + 1
    assert await seconds_of(site, event["id"]) == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert await seconds_of(site, late["id"]) == [T0 + 3]


async def test_nth_trigger_launches_every_nth_scheduled_minute(site: Site) -> None:
    event = await make_event(site, "Every third minute", [schedule(), {"type": "nth", "enabled": True, "every": 3}])
    scheduler = Scheduler(site.node, CONFIG)
    launched = [await scheduler.tick(T0 + 60 * m) for m in range(9)]
    # Minutes 0..8 are counted 1..9: the 3rd, 6th and 9th launch.
    assert launched == [0, 0, 1, 0, 0, 1, 0, 0, 1]
    assert [int(j["now"]) for j in await jobs_of(site, event["id"])] == [T0 + 120, T0 + 300, T0 + 480]
    # A restarted scheduler keeps counting from the stored counter, not from zero.
    again = Scheduler(site.node, CONFIG)
    assert [await again.tick(T0 + 60 * m) for m in range(9, 12)] == [0, 0, 1]


async def test_quiet_trigger_marks_jobs_invisible_and_ephemeral(site: Site) -> None:
    event = await make_event(site, "Quiet", [schedule(), {"type": "quiet", "enabled": True, "invisible": True,
                                                          "ephemeral": True}])  # fmt: skip
    assert await Scheduler(site.node, CONFIG).tick(T0) == 1
    (job,) = await jobs_of(site, event["id"])
    assert job["invisible"] is True and job["ephemeral"] is True
