"""The alert evaluator's primary half on a real in-process primary and real Redis: inbox entries as the nodes post
them (cluster/monitoring/intake.py), and what they do: invocations with their web hook once, snooze, the stale
sweep (with a clock moved on), limit_jobs in placement, abort_jobs, a clear asked for by a job, an alert that goes
away while active. Cluster-level behaviour (real agents, failover) is in tests/test_alerts_cluster.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cluster.launcher import Launch, launch_job
from cluster.monitoring.alertservice import AlertService
from cluster.servers import merge_join
from storage.connection import Database
from storage.families import ALERTS, CHANNELS, GROUPS, WEB_HOOKS
from tests.authkit import Site, open_site
from tests.sinks import HookReceiver

Record = dict[str, Any]


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.05)
    return found


@pytest.fixture
async def site(db: Database, tmp_path: Path) -> AsyncIterator[Site]:
    async for found in open_site(db, tmp_path / "data", login_ip_limit=0):
        yield found


def service(site: Site) -> AlertService:
    found = site.node.alerting
    assert found is not None
    return found


async def define(site: Site, alert_id: str, hook_url: str = "", **extra: Any) -> None:
    node, fence = site.node, site.node.fence()
    actions = []
    if hook_url:
        await node.stores.defs.create(fence, WEB_HOOKS, {"id": f"h_{alert_id}", "title": "h", "enabled": True,
                                                         "url": hook_url, "method": "POST", "timeout": 10,
                                                         "body": '{"alert": "{{ alert.id }}", "c": "{{ template }}"}',
                                                         "headers": [], "revision": 1})  # fmt: skip
        actions = [{"enabled": True, "condition": c, "type": "web_hook", "web_hook": f"h_{alert_id}"}
                   for c in ("alert_new", "alert_cleared")]  # fmt: skip
    await node.stores.defs.create(fence, ALERTS, {"id": alert_id, "title": alert_id.title(), "enabled": True,
                                                  "expression": "true", "message": "m", "samples": 1,
                                                  "actions": actions, "groups": [], "revision": 1, **extra})


async def join(site: Site, server_id: str) -> None:
    groups = await site.node.stores.defs.all(GROUPS)
    record = merge_join(None, {"id": server_id, "hostname": f"{server_id}.example"}, time.time(), groups)
    await site.node.stores.servers.join(record, f"n1|{server_id}", 60_000)
    await site.node.stores.agents.post([{"server": server_id, "cmd": "joined", "data": {}}])


async def sample(site: Site, server_id: str, results: dict[str, str | None], date: float | None = None) -> None:
    await site.node.stores.alertstate.post([{"server": server_id, "date": date or time.time(), "groups": ["main"],
                                             "results": results, "hostname": f"{server_id}.example"}])  # fmt: skip


async def invocation(site: Site, alert_id: str, active: bool = True) -> Record:
    async def find() -> Record | None:
        await site.node.stores.alerts.index_pending()
        rows, _ = await site.node.stores.alerts.search(f"alert:{alert_id} active:{str(active).lower()}", 0, 10)
        return rows[0] if rows else None

    found: Record = await until(find)
    return found


async def test_fire_sends_the_hook_once_and_a_clear_sends_the_cleared_one(site: Site) -> None:
    async with HookReceiver() as hooks:
        await define(site, "hot", f"{hooks.url}/hot")
        await sample(site, "s1", {"hot": "m"})
        fired = await invocation(site, "hot")
        assert fired["server"] == "s1" and fired["message"] == "m" and fired["notified"] is True
        await sample(site, "s1", {"hot": "m"})  # still true: nothing new
        await sample(site, "s1", {"hot": None})
        cleared = await invocation(site, "hot", active=False)
        assert cleared["id"] == fired["id"]

        async def both() -> bool:
            return len(hooks.to("/hot")) >= 2

        await until(both)
        await asyncio.sleep(0.5)
        bodies = sorted(r.body for r in hooks.to("/hot"))
        assert bodies == sorted([f'{{"alert": "{fired["id"]}", "c": "alert_new"}}',
                                 f'{{"alert": "{fired["id"]}", "c": "alert_cleared"}}'])  # fmt: skip
        got = await until(lambda: _with_actions(site, fired["id"], 3))
        assert [a["code"] for a in got["actions"] if a["type"] == "web_hook"] == [0, 0]
        # the universal (hidden) snapshot on alert_new ran too: this server never sent a sample to take one of
        snap = [a for a in got["actions"] if a["type"] == "snapshot"]
        assert len(snap) == 1 and snap[0]["code"] == "snapshot" and snap[0]["condition"] == "alert_new"
        assert await site.node.stores.alertstate.active() == {}
        assert await site.node.stores.alertstate.warm(["s1"]) == {"s1": {}}


async def _with_actions(site: Site, inv_id: str, count: int) -> Record | None:
    found = await site.node.stores.alerts.get(inv_id)
    return found if found is not None and len(found.get("actions") or []) >= count else None


async def test_snooze_holds_notifications_but_not_the_invocation(site: Site) -> None:
    async with HookReceiver() as hooks:
        await define(site, "quiet", f"{hooks.url}/quiet")
        await site.node.stores.state.update(site.node.fence(), {"alert_snooze": time.time() + 3600})
        await sample(site, "s1", {"quiet": "m"})
        fired = await invocation(site, "quiet")
        await asyncio.sleep(1.5)
        assert hooks.to("/quiet") == [] and (await site.node.stores.alerts.get(fired["id"]) or {}).get("actions") == []


async def test_stale_alerts_clear_silently(site: Site) -> None:
    async with HookReceiver() as hooks:
        await define(site, "old", f"{hooks.url}/old")
        await sample(site, "s2", {"old": "m"})
        fired = await invocation(site, "old")
        await until(lambda: asyncio.sleep(0, hooks.to("/old")))
        assert await service(site).sweep(time.time() + 30) == 0  # not stale yet
        assert await service(site).sweep(time.time() + 91) == 1
        cleared = await invocation(site, "old", active=False)
        assert cleared["id"] == fired["id"] and await site.node.stores.alertstate.active() == {}
        await asyncio.sleep(1.0)
        assert len(hooks.to("/old")) == 1  # the clear sent nothing


async def test_an_alert_that_goes_away_while_active_clears_silently(site: Site) -> None:
    await define(site, "gone")
    await sample(site, "s1", {"gone": "m"})
    fired = await invocation(site, "gone")
    await site.node.stores.defs.delete(site.node.fence(), ALERTS, "gone")
    await sample(site, "s1", {})
    assert (await invocation(site, "gone", active=False))["id"] == fired["id"]


async def test_limit_jobs_keeps_new_jobs_off_and_abort_jobs_stops_running_ones(site: Site) -> None:
    dispatcher = site.node.dispatcher
    assert dispatcher is not None
    await join(site, "s1")
    await until(lambda: asyncio.sleep(0, "s1" in dispatcher.servers))
    event: Record = {"id": "e1", "title": "E", "enabled": True, "category": "general", "plugin": "shellplug",
                     "targets": ["s1"], "algo": "random", "params": {"script": "sleep 30"}}  # fmt: skip
    running = await launch_job(site.node, Launch(event=event, source="user"))
    assert running is not None
    await define(site, "busy", limit_jobs=True, abort_jobs=True)
    await sample(site, "s1", {"busy": "m"})
    fired = await invocation(site, "busy")

    async def aborted() -> Record | None:
        found = dispatcher.live(str(running["id"]))
        return found if found is not None and found.get("aborting") else None

    job = await until(aborted)
    assert job["aborting"]["reason"] == "Alert Fired: Busy"
    await dispatcher.refresh_servers()
    assert dispatcher.alert_blocked == {"s1"}
    blocked = await launch_job(site.node, Launch(event=event, source="user"))
    assert blocked is not None
    stored = await site.node.stores.jobs.get(str(blocked["id"]))
    assert stored is not None and stored["state"] == "complete" and stored["code"] == "abort"
    # a clear asked for by a job (clear_alert) ends it: placement may use the server again
    assert await service(site).clear(fired["id"]) is True
    assert await service(site).clear(fired["id"]) is False  # twice changes nothing
    await invocation(site, "busy", active=False)
    await dispatcher.refresh_servers()
    assert dispatcher.alert_blocked == set()


async def test_a_channel_action_notifies_through_its_web_hook(site: Site) -> None:
    async with HookReceiver() as hooks:
        node, fence = site.node, site.node.fence()
        await define(site, "chan", f"{hooks.url}/chan")  # its own hook actions, plus a channel below
        await node.stores.defs.create(fence, CHANNELS, {"id": "ops", "title": "Ops", "enabled": True, "users": [],
                                                        "email": "", "web_hook": "h_chan", "run_event": "",
                                                        "max_per_day": 0, "revision": 1})  # fmt: skip
        alert = await node.stores.defs.get(ALERTS, "chan")
        assert alert is not None
        actions = [{"enabled": True, "condition": "alert_new", "type": "channel", "channel_id": "ops"}]
        await node.stores.defs.replace(fence, ALERTS, {**alert, "actions": actions, "revision": 2}, 1)
        await sample(site, "s3", {"chan": "m"})
        fired = await invocation(site, "chan")
        await until(lambda: asyncio.sleep(0, hooks.to("/chan")))
        got = await until(lambda: _with_actions(site, fired["id"], 2))
        channel = [a for a in got["actions"] if a["type"] == "channel"]
        assert len(channel) == 1 and channel[0]["code"] == 0 and "Web Hook Details" in channel[0]["details"]
