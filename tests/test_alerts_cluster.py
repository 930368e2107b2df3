"""Monitoring and alerting on real nodes: minute samples from agents become monitor values, time series, server
figures and alert invocations; an alert's web hook is delivered once, across a kill -9 of the primary in the
middle of its warm-up; invocations are searchable from every node.

The agent here is either Podium's own (`podium agent`, with a monitor plugin whose output the test controls) or
the foreign agent of tests/foreign_agent.py, which sends a sample when the test says so. A sample is refused when
the server sent one in the same minute already, so the tests that need several samples send them in successive
minutes (each waits for the next minute to begin).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.foreign_agent import ForeignAgent
from tests.jobkit import SECRET, Jobs, agent
from tests.servers import Cluster, Node
from tests.sinks import HookReceiver, eventually

pytestmark = pytest.mark.timeout(420)

SAMPLE: dict[str, Any] = {
    "uptime_sec": 3600, "load": [0.5, 0.4, 0.3], "jobs": 0,
    "cpu": {"cores": 2, "currentLoad": 12.5, "totals": {"iowait": 1.0}},
    "memory": {"total": 8 * 2**30, "used": 2 * 2**30, "available": 6 * 2**30},
    "mounts": {"root": {"use": 40.0}},
    "stats": {"fs": {"rx": 1000, "wx": 2000}, "io": {"tIO": 10},
              "network": {"conns": 7, "rx_bytes": 5000, "tx_bytes": 6000}},
    "processes": {"all": 99, "list": []}, "commands": {},
}  # fmt: skip


def sample(disk_use: float, rx: int = 5000) -> dict[str, Any]:
    data = copy.deepcopy(SAMPLE)
    data["mounts"]["root"]["use"] = disk_use
    data["stats"]["network"]["rx_bytes"] = rx
    return data


async def next_minute(at_second: float = 1.0) -> None:
    """Sleep until `at_second` seconds into the next minute (a new minute for the duplicate check)."""
    now = time.time()
    await asyncio.sleep((now // 60 + 1) * 60 + at_second - now)


async def late_in_minute(second: float = 52.0) -> None:
    """Sleep until `second` seconds into this minute (or the next, when it is past that already)."""
    now = time.time()
    target = (now // 60) * 60 + second
    await asyncio.sleep(target - now if target > now else target + 60 - now)


async def hook(jobs: Jobs, node: Node, receiver: HookReceiver, name: str) -> None:
    await jobs.ok(node, "create_web_hook", {"id": name, "title": name, "url": f"{receiver.url}/{name}",
                                            "method": "POST", "timeout": 30,
                                            "body": '{"alert": "{{ alert.id }}", "text": "{{ text }}"}'})  # fmt: skip


async def test_samples_become_monitor_values_time_series_and_quickmon_on_every_node(tmp_path: Path) -> None:
    async with Cluster(tmp_path, size=2, extra=("--secret-key", SECRET)) as c:
        primary = await c.wait_single_primary()
        satellite = next(n for n in c.nodes if n is not primary)
        jobs = await Jobs.login(c, primary)
        foreign = await ForeignAgent(primary.host, primary.port, SECRET, hostname="mon1.example").start()
        try:
            await eventually(lambda: foreign.joined, what="the agent joined")
            if time.time() % 60 > 40:
                await next_minute()  # the duplicate check below needs the second sample in the first one's minute
            first_minute = time.time() // 60
            await foreign.monitor(sample(40.0))
            for i in range(5):
                await foreign.quickmon({"cpu": {"currentLoad": 10.0 + i, "avgLoad": 0.5}, "mem": {"used": 100 + i},
                                        "fs": {"rx": 1}, "net": {"rx": 2, "tx": 3}})  # fmt: skip
                await asyncio.sleep(1.1)  # one a second, as agents send them (a node keeps one per flush per server)

            async def stored() -> dict[str, Any] | None:
                reply = await jobs.ok(satellite, "get_server", {"id": foreign.server_id})
                return reply if reply.get("data") else None

            reply = await eventually(stored, what="the sample on the satellite")
            monitors = reply["data"]["data"]["monitors"]
            assert monitors["disk_usage_root"] == 40.0 and monitors["net_conns"] == 7 and monitors["total_procs"] == 99
            assert reply["data"]["data"]["deltas"]["os_bytes_in_sec"] == 0  # the first sample: no rate yet
            assert reply["server"]["info"]["monitors"]["mem_used"] == 2 * 2**30  # what least_mem placement reads
            latest = await jobs.ok(satellite, "get_latest_monitor_data", {"server": foreign.server_id, "sys": "hourly",
                                                                          "limit": 10})  # fmt: skip
            assert len(latest["rows"]) == 1 and latest["rows"][0]["count"] == 1
            assert latest["rows"][0]["totals"]["disk_usage_root"] == 40.0
            # a second sample in the same minute is refused: nothing changes
            before = time.time()
            if before // 60 == first_minute and before % 60 < 55:
                await foreign.monitor(sample(99.0))
                await asyncio.sleep(1.5)
                again = await jobs.ok(primary, "get_latest_monitor_data", {"server": foreign.server_id,
                                                                           "sys": "daily", "limit": 10})  # fmt: skip
                assert [r["count"] for r in again["rows"]] == [1]
                assert again["rows"][0]["totals"]["disk_usage_root"] == 40.0
            quick = await eventually(lambda: _quick(jobs, satellite, foreign.server_id), what="quickmon samples")
            loads = [q["_qm_cpu_usage"] for q in quick]  # a busy node may keep one of two close frames only
            assert loads[-1] == 14.0 and loads == sorted(set(loads)) and set(loads) <= {10.0, 11.0, 12.0, 13.0, 14.0}
            assert all(b["date"] > a["date"] for a, b in itertools.pairwise(quick))
            _, bad = await jobs.call(primary, "get_latest_monitor_data", {"server": foreign.server_id,
                                                                             "sys": "weekly", "limit": 1})  # fmt: skip
            assert bad["code"] == "monitor", bad
            tested = await jobs.ok(primary, "test_monitor", {"server": foreign.server_id, "source": "memory.total / 2",
                                                             "data_type": "bytes"})  # fmt: skip
            assert tested["value"] == 4 * 2**30
            alert = await jobs.ok(primary, "test_alert", {"server": foreign.server_id,
                                                          "expression": "monitors.disk_usage_root > 30",
                                                          "message": "disk {{monitors.disk_usage_root}}%"})  # fmt: skip
            assert alert == {"code": 0, "result": True, "message": "disk 40%"}
        finally:
            await foreign.stop()


async def _quick(jobs: Jobs, node: Node, server_id: str) -> list[dict[str, Any]] | None:
    found = (await jobs.ok(node, "get_quickmon_data", {"server": server_id}))["servers"].get(server_id) or []
    return found if len(found) >= 3 else None


async def test_an_alert_warms_up_across_a_failover_fires_once_and_clears(tmp_path: Path) -> None:
    hosts = ("127.0.0.1", "127.0.0.2")  # one port on two addresses: the foreign agent follows xySat there
    async with HookReceiver() as receiver, Cluster(tmp_path, size=2, extra=("--secret-key", SECRET), hosts=hosts) as c:
        primary = await c.wait_single_primary()
        jobs = await Jobs.login(c, primary)
        await hook(jobs, primary, receiver, "disk")
        created = await jobs.ok(primary, "create_alert", {
            "title": "Disk nearly full", "expression": "monitors.disk_usage_root >= 90", "samples": 2,
            "message": "root at {{monitors.disk_usage_root}}%",
            "actions": [{"enabled": True, "condition": "alert_new", "type": "web_hook", "web_hook": "disk"},
                        {"enabled": True, "condition": "alert_new", "type": "ticket", "ticket_type": "issue",
                         "ticket_assignees": ["admin"], "ticket_due": "2 days"}]})
        alert_id = created["alert"]["id"]

        async def both_nodes() -> bool:  # so that `joined` names both: the agent needs the other one after the kill
            return len((await jobs.ok(primary, "get_servers"))["masters"]) == 2

        await eventually(both_nodes, what="both nodes registered")
        foreign = await ForeignAgent(primary.host, primary.port, SECRET, hostname="disk1.example").start()
        try:
            await eventually(lambda: foreign.joined, what="the agent joined")
            await late_in_minute()
            await foreign.monitor(sample(95.0))  # warm-up: 1 of 2

            async def warm() -> bool:
                return bool((await jobs.ok(primary, "get_server", {"id": foreign.server_id})).get("data"))

            await eventually(warm, what="the first sample stored")
            await asyncio.sleep(1.0)  # the primary has applied it (its inbox is read continuously)
            primary.kill9()
            survivor = await c.wait_single_primary(timeout=60, nodes=[n for n in c.nodes if n is not primary])
            jobs = await Jobs.login(c, survivor)
            await eventually(lambda: foreign.joined and foreign.hosts_seen[-1] == survivor.host, timeout=60,
                             what="the agent on the new primary")
            await next_minute(2.0)
            await foreign.monitor(sample(96.0))  # 2 of 2: fires

            async def fired() -> list[dict[str, Any]] | None:
                found = await jobs.ok(survivor, "search_alerts", {"query": f"active:true alert:{alert_id}",
                                                                  "limit": 10})  # fmt: skip
                return found["rows"] or None

            rows = await eventually(fired, timeout=60, what="an active invocation")
            assert len(rows) == 1 and rows[0]["server"] == foreign.server_id
            # The stock disk alert (samples 1) fired at the first sample, before the failover. Ours began warming up
            # at that same sample: its date is the first true sample's, kept in Redis across the failover.
            stock = (await jobs.ok(survivor, "search_alerts", {"query": "alert:disk_usage_root_high"}))["rows"]
            assert len(stock) == 1 and stock[0]["date"] == rows[0]["date"] < rows[0]["modified"]
            assert rows[0]["message"] == "root at 96%"
            await eventually(lambda: receiver.to("/disk"), what="the web hook")
            await next_minute(1.0)
            await foreign.monitor(sample(50.0))  # count back to 1: still active (samples 2)
            await next_minute(1.0)
            await foreign.monitor(sample(50.0))  # 0: clears

            async def cleared() -> bool:
                found = await jobs.ok(survivor, "search_alerts", {"query": f"active:false alert:{alert_id}"})
                return bool(found["rows"])

            await eventually(cleared, timeout=60, what="the invocation cleared")
            invocation = (await jobs.ok(survivor, "get_alert_invocations", {"ids": [rows[0]["id"]]}))["alerts"][0]
            assert invocation["active"] is False and invocation["modified"] > invocation["date"]
            # its web hook, and the default (hidden) universal snapshot
            assert sorted((a["type"], a["code"]) for a in invocation["actions"]) == [("snapshot", 0), ("ticket", 0),
                                                                                     ("web_hook", 0)]  # fmt: skip
            await asyncio.sleep(2.0)
            assert len(receiver.to("/disk")) == 1  # exactly once, across the failover and the clear
            (ticket_id,) = invocation["tickets"]  # the ticket action: one ticket, linked both ways
            ticket = (await jobs.ok(survivor, "get_ticket", {"id": ticket_id}))["ticket"]
            assert ticket["alerts"] == [invocation["id"]] and ticket["assignees"] == ["admin"]
            assert ticket["subject"].startswith("Alert: Disk nearly full") and ticket["due"] > time.time()
            found = await jobs.ok(survivor, "search_tickets", {"query": f"alerts:{invocation['id']}"})
            assert [r["id"] for r in found["rows"]] == [ticket_id]
        finally:
            await foreign.stop()


async def test_a_real_agent_fires_an_alert_from_its_monitor_plugin(tmp_path: Path) -> None:
    level = tmp_path / "level.txt"
    level.write_text("level=512\n")
    async with HookReceiver() as receiver, Cluster(tmp_path, size=2, extra=("--secret-key", SECRET)) as c:
        primary = await c.wait_single_primary()
        satellite = next(n for n in c.nodes if n is not primary)
        jobs = await Jobs.login(c, primary)
        await hook(jobs, primary, receiver, "tank")
        await jobs.ok(primary, "create_plugin", {"id": "tank", "title": "Tank level", "type": "monitor",
                                                 "command": "/bin/sh", "script": f"cat {level}\n", "format": "text"})
        await jobs.ok(primary, "create_monitor", {"id": "tank_level", "title": "Tank", "source": "commands.tank",
                                                  "data_type": "integer", "data_match": r"level=(\d+)"})  # fmt: skip
        await jobs.ok(primary, "create_alert", {
            "id": "tank_high", "title": "Tank high", "expression": "monitors.tank_level > 500",
            "message": "tank at {{monitors.tank_level}}",
            "actions": [{"enabled": True, "condition": "alert_new", "type": "web_hook", "web_hook": "tank"}]})
        proc = agent(tmp_path, "tank", primary.url, satellite.url).start()
        try:
            found = await eventually(lambda: receiver.to("/tank"), timeout=90, what="the alert's web hook")
            body = json.loads(found[0].body)
            assert "tank at 512" in body["text"]
            for node in (primary, satellite):
                rows = (await jobs.ok(node, "search_alerts", {"query": "alert:tank_high"}))["rows"]
                assert len(rows) == 1 and rows[0]["active"] is True and rows[0]["id"] == body["alert"]
            await asyncio.sleep(2.0)
            assert len(receiver.to("/tank")) == 1
        finally:
            proc.terminate()
