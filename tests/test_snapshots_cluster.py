"""Snapshots on two real nodes with foreign agents (tests/foreign_agent.py) sending minute samples on demand: a
snapshot holds the sample, the active jobs and alerts and the QuickMon samples of the moment; the default alert
action takes one when an alert fires; search answers on the satellite, a write there answers `master`; a group
snapshot holds both members; a failing job's universal `snapshot` action takes one naming the job; delete; a
watched server takes one per sample while watched and none once the watch is cancelled."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.actionkit import results
from tests.foreign_agent import ForeignAgent
from tests.jobkit import SECRET, Jobs
from tests.servers import Cluster, Node
from tests.sinks import eventually
from tests.test_alerts_cluster import next_minute, sample

pytestmark = pytest.mark.timeout(420)


async def snapshots(jobs: Jobs, node: Node, query: str, **extra: Any) -> list[dict[str, Any]]:
    return list((await jobs.ok(node, "search_snapshots", {"query": query, "limit": 100, **extra}))["rows"])


async def test_snapshots_of_servers_groups_jobs_alerts_and_watches(tmp_path: Path) -> None:
    async with Cluster(tmp_path, size=2, extra=("--secret-key", SECRET)) as c:
        primary = await c.wait_single_primary()
        satellite = next(n for n in c.nodes if n is not primary)
        jobs = await Jobs.login(c, primary)
        one = await ForeignAgent(primary.host, primary.port, SECRET, hostname="snap1.example", lines=300).start()
        two = await ForeignAgent(primary.host, primary.port, SECRET, hostname="snap2.example").start()
        try:
            await eventually(lambda: one.joined and two.joined, what="both agents joined")
            a, b = one.server_id, two.server_id
            _, early = await jobs.call(primary, "create_snapshot", {"server": a})
            assert early["code"] == "snapshot" and "No monitoring data" in early["description"], early
            for i in range(3):
                await one.quickmon({"cpu": {"currentLoad": 20.0 + i}, "mem": {"used": 5}, "net": {"rx": 1}})
                await asyncio.sleep(1.1)  # QuickMon keeps one sample per second: each in a second of its own
            await one.monitor(sample(95.0))  # the stock disk alert (1 sample) fires on a
            await two.monitor(sample(40.0))

            async def alert_snapshot() -> dict[str, Any] | None:
                rows = await snapshots(jobs, satellite, f"source:alert server:{a}", verbose=True)
                return rows[0] if rows else None

            by_alert = await eventually(alert_snapshot, timeout=60, what="the default alert action's snapshot")
            (invocation,) = (await jobs.ok(primary, "search_alerts", {"query": f"active:true server:{a}"}))["rows"]
            assert by_alert["alert"] == invocation["id"] and invocation["id"] in by_alert["alerts"]
            assert by_alert["data"]["mounts"]["root"]["use"] == 95.0
            invocation = (await jobs.ok(primary, "get_alert_invocations", {"ids": [invocation["id"]]}))["alerts"][0]
            assert [(r["type"], r["code"]) for r in invocation["actions"]] == [("snapshot", 0)]
            assert by_alert["id"] in invocation["actions"][0]["description"]

            # A job running on `a` at the moment of a user's snapshot.
            event = await jobs.event(primary, "#!/bin/sh\necho hi\n", targets=[a])
            running = await jobs.run(primary, event)
            await jobs.wait_job(primary, running, "active")
            _, refused = await jobs.call(satellite, "create_snapshot", {"server": a})
            assert refused["code"] == "master", refused
            created = await jobs.ok(primary, "create_snapshot", {"server": a})
            (record,) = await snapshots(jobs, satellite, f"#id:{created['id']}", verbose=True)
            assert (record["type"], record["source"], record["server"], record["username"]) == \
                ("server", "user", a, "admin")  # fmt: skip
            assert running in record["jobs"] and invocation["id"] in record["alerts"]
            assert record["data"]["monitors"]["disk_usage_root"] == 95.0 and record["hostname"] == "snap1.example"
            assert [q["_qm_cpu_usage"] for q in record["quickmon"]][-3:] == [20.0, 21.0, 22.0]
            brief = await snapshots(jobs, satellite, f"server:{a} source:user")
            assert [r["id"] for r in brief] == [created["id"]] and "mounts" not in brief[0]["data"]
            assert {r["id"] for r in await snapshots(jobs, satellite, f"jobs:{running}")} == {created["id"]}
            await jobs.wait_job(primary, running, timeout=60)

            # A group snapshot of both agents (their group from the host name).
            group = (await jobs.ok(primary, "get_server", {"id": b}))["server"]["groups"][0]
            made = await jobs.ok(primary, "create_group_snapshot", {"group": group})
            (whole,) = await snapshots(jobs, satellite, f"#id:{made['id']}", verbose=True)
            members = [s["id"] for s in whole["servers"]]
            assert sorted(members) == sorted([a, b]) and whole["groups"] == [group] and whole["type"] == "group"
            assert [s["server"] for s in whole["snapshots"]] == members and len(whole["quickmons"]) == 2
            assert invocation["id"] in whole["alerts"] and whole["group_def"]["id"] == group

            # A failing job: the universal `error` action takes a snapshot of its server.
            one.lines, one.code = 2, 1
            failing = await jobs.run(primary, event)

            async def snapped() -> dict[str, Any] | None:
                job = await jobs.job(primary, failing)
                done = results(job, "snapshot", "error")
                return done[0] if done else None

            result = await eventually(snapped, timeout=60, what="the job's snapshot action")
            assert result["code"] == 0 and a in result["description"], result
            (by_job,) = await snapshots(jobs, satellite, f"source:job server:{a}", verbose=True)
            assert by_job["job"] == failing and by_job["id"] in result["description"]

            await jobs.ok(primary, "delete_snapshot", {"id": by_job["id"]})
            assert await snapshots(jobs, satellite, "source:job") == []

            # Watching b: a snapshot with each sample while watched, none once cancelled.
            await jobs.ok(primary, "watch_server", {"id": b, "duration": 600})
            await next_minute(1.0)
            await two.monitor(sample(41.0))

            async def watched() -> list[dict[str, Any]] | None:
                return await snapshots(jobs, satellite, f"source:watch server:{b}", verbose=True) or None

            (by_watch,) = await eventually(watched, timeout=60, what="the watch's snapshot")
            assert by_watch["data"]["mounts"]["root"]["use"] == 41.0
            await jobs.ok(primary, "watch_server", {"id": b, "duration": 0})
            await next_minute(1.0)
            await two.monitor(sample(42.0))

            async def processed() -> bool:
                found = await jobs.ok(satellite, "get_server", {"id": b})
                return bool(found["data"]) and found["data"]["data"]["mounts"]["root"]["use"] == 42.0

            await eventually(processed, timeout=60, what="the sample after the watch")
            await asyncio.sleep(1.0)
            assert len(await snapshots(jobs, satellite, f"source:watch server:{b}")) == 1
        finally:
            await one.stop()
            await two.stop()
