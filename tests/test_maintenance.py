"""Retention (cluster/maintenance.py): old jobs, activity and surplus sessions go, with their index
entries, in fenced batches, and only on the primary."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from api.activity import build_record
from cluster.maintenance import Maintenance, MaintenanceConfig, maintenance_service
from cluster.node import NodeRuntime, NotPrimary
from storage.connection import Database
from storage.errors import FencedError
from storage.fence import Fence
from storage.ids import generate_id
from storage.stores import Stores
from tests.authkit import Site, ok, open_site, wait_until

DAY = 86400
# Nothing but what a test asks for.
OFF = MaintenanceConfig(job_max_rows=0, activity_max_rows=0, max_sessions_per_user=0, batch=7)


def config(**changes: Any) -> MaintenanceConfig:
    return MaintenanceConfig(**{**{f: getattr(OFF, f) for f in OFF.__dataclass_fields__}, **changes})


async def add_jobs(node: NodeRuntime, count: int, *, days_ago: float, event: str, **extra: Any) -> list[str]:
    ids: list[str] = []
    for n in range(count):
        completed = time.time() - days_ago * DAY + n
        job: dict[str, Any] = {
            "id": generate_id("j"), "state": "complete", "code": 0, "event": event, "category": "general",
            "plugin": "testplug", "server": "s1", "source": "scheduler", "tags": ["_success"],
            "started": completed - 2, "completed": completed, "elapsed": 2, **extra,
        }  # fmt: skip
        assert await node.stores.jobs.launch(node.fence(), job)
        ids.append(str(job["id"]))
    return ids


async def add_activity(node: NodeRuntime, count: int, *, days_ago: float, action: str) -> list[str]:
    ids = []
    for _ in range(count):
        record = build_record(None, action, "a test record", "admin")
        record["epoch"] = int(time.time() - days_ago * DAY)
        await node.stores.activity.add(record)
        ids.append(record["id"])
    return ids


async def job_search(node: NodeRuntime, query: str) -> tuple[set[str], int]:
    rows, total = await node.stores.jobs.search(query, offset=0, limit=1000)
    return {r["id"] for r in rows}, total


async def test_jobs_older_than_the_retention_go_with_their_index_entries(site: Site, db: Database) -> None:
    node = site.node
    old = await add_jobs(node, 30, days_ago=10, event="oldev")
    recent = await add_jobs(node, 5, days_ago=1, event="newev")
    removed = await Maintenance(node, config(job_expire_days=7)).run_once()
    assert removed.jobs == 30
    assert await job_search(node, "*") == (set(recent), 5)
    assert await job_search(node, "event:oldev") == (set(), 0)  # no index entry left behind
    assert await job_search(node, "event:newev") == (set(recent), 5)
    assert all(j is None for j in await node.stores.jobs.get_many(old))
    assert await db.client.hmget(db.keys.index("jobs", "slots"), old) == [None] * len(old)
    assert (await Maintenance(node, config(job_expire_days=7)).run_once()).jobs == 0


async def test_an_expired_job_takes_its_files_and_input_uploads(site: Site) -> None:
    node, files = site.node, site.node.stores.files
    upload, bucket = "files/users/admin/r1/in.txt", "files/bucket/b1/r2/shared.txt"
    for path in (upload, bucket):
        await files.put(path, b"data")
    inputs = [{"path": upload, "owned": True}, {"path": bucket, "bucket": "b1"}]
    (job_id,) = await add_jobs(node, 1, days_ago=10, event="oldev", input={"files": inputs})
    output = f"files/jobs/{job_id}/r3/out.txt"
    await files.put(output, b"out")
    assert (await Maintenance(node, config(job_expire_days=7)).run_once()).jobs == 1
    assert [await files.stat(p) is None for p in (upload, output, bucket)] == [True, True, False]


async def test_job_and_activity_caps_keep_the_newest(site: Site) -> None:
    node = site.node
    jobs = await add_jobs(node, 12, days_ago=3, event="e") + await add_jobs(node, 8, days_ago=2, event="e")
    before, _ = await node.stores.activity.search("*", 0, 1000)
    activity = await add_activity(node, 20, days_ago=0, action="test_cap")
    removed = await Maintenance(node, config(job_max_rows=8, activity_max_rows=5)).run_once()
    assert removed.jobs == 12 and removed.activity == len(before) + 20 - 5
    assert await job_search(node, "*") == (set(jobs[12:]), 8)
    rows, total = await node.stores.activity.search("*", 0, 1000)
    assert total == 5 and {r["id"] for r in rows} == set(activity[-5:])


async def test_old_activity_goes_and_search_no_longer_finds_it(site: Site, admin: dict[str, str]) -> None:
    node = site.node
    old = await add_activity(node, 9, days_ago=40, action="test_old")
    recent = await add_activity(node, 3, days_ago=2, action="test_recent")
    removed = await Maintenance(node, config(activity_expire_days=30)).run_once()
    assert removed.activity == 9
    found = await ok(site, "search_activity", {"query": "action:test_old|test_recent", "limit": 100}, admin)
    assert {r["id"] for r in found["rows"]} == set(recent) and found["list"]["length"] == 3
    assert await node.stores.activity.get_many(old) == []


async def test_records_already_gone_are_stepped_over(site: Site, db: Database) -> None:
    """A crash between delete_job's two steps leaves an index entry without its record: retention goes
    on past it instead of finding it again forever."""
    node = site.node
    old = await add_jobs(node, 10, days_ago=10, event="old")
    await db.client.delete(db.keys.job(old[0]), db.keys.job(old[8]))
    removed = await Maintenance(node, config(job_expire_days=7)).run_once()
    assert removed.jobs == 8
    assert (await job_search(node, "*"))[0] == set()


async def test_sessions_beyond_the_cap_end_oldest_first(db: Database, tmp_path: Path) -> None:
    async for site in open_site(db, tmp_path / "d", login_ip_limit=0, max_sessions_per_user=3):
        sids = []
        for _ in range(5):
            sids.append((await site.login())[0])
            await asyncio.sleep(1.05)  # `created` is in whole seconds
        live = [(await site.call("get_global_state", headers={"X-Session-ID": s}))[0] == 200 for s in sids]
        assert live == [False, False, True, True, True]
        removed = await Maintenance(site.node, config(max_sessions_per_user=1)).run_once()
        assert removed.sessions == 2
        live = [(await site.call("get_global_state", headers={"X-Session-ID": s}))[0] == 200 for s in sids]
        assert live == [False, False, False, False, True]
        assert await db.client.scard(db.keys.user_sessions("admin")) == 1


async def test_a_deposed_primary_deletes_nothing(site: Site, db: Database) -> None:
    node = site.node
    old = await add_jobs(node, 3, days_ago=10, event="old")
    stale = Fence(db, node.node_id, node.epoch - 1)
    with pytest.raises(FencedError):
        await node.stores.jobs.delete_many(stale, old)
    assert await job_search(node, "*") == (set(old), 3)
    assert all(j is not None for j in await node.stores.jobs.get_many(old))


async def test_only_the_primary_runs_it(db: Database, tmp_path: Path) -> None:
    """Node B carries the maintenance service; while A is primary nothing is removed, and B's own pass
    is refused. When A stops, B takes over and retention runs at once."""
    fast = config(job_expire_days=7, first_run_s=0.05, interval_s=0.2)
    a = NodeRuntime(db, "na", "http://127.0.0.1:1", lease_ms=3000, stores=Stores.open(db))
    b = NodeRuntime(db, "nb", "http://127.0.0.1:2", lease_ms=3000, services=[maintenance_service(fast)],
                    stores=Stores.open(db))  # fmt: skip
    await a.start()
    try:
        await wait_until(lambda: a.is_primary, "a primary")
        await b.start()
        old = await add_jobs(a, 4, days_ago=10, event="old")
        await asyncio.sleep(1.0)
        assert not b.is_primary
        assert (await job_search(a, "*"))[1] == 4
        with pytest.raises(NotPrimary):
            await Maintenance(b, fast).run_once()
        await a.stop()
        await wait_until(lambda: b.is_primary, "b primary")
        deadline = time.monotonic() + 10
        while (await job_search(b, "*"))[1]:
            assert time.monotonic() < deadline, "the new primary did not trim"
            await asyncio.sleep(0.05)
        assert all(j is None for j in await b.stores.jobs.get_many(old))
    finally:
        await b.stop()
        await a.stop()
