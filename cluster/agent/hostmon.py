"""Host metrics on the link, on xySat's schedule (execution reference 2.1):

- `monitor {version: "1.0", date, server, hostname, data: ServerMonitorData}` each minute: at the minute
  boundary `date` is taken, then the agent sleeps `1000 + hostID % (clamp(numServers, 1, 1000) * 29)` ms (so
  a thousand servers spread over ~29 s), runs its monitor plugins and samples. One more right after `joined`
  (after 1 s) when no job is running, as xySat does. With `monitoring_enabled: false` a `dummy` record goes
  instead, on the same schedule.
- `quickmon {mem, cpu, fs, net[, commands]}` each second after a sleep of `hostID % clamp(numServers, 1, 1000)`
  ms, unless monitoring or `quickmon_enabled` is off.
- `testMonitorPlugin {plugin_id, ...}` is answered with `monitorPluginTestResult {..., result, stderr}`.

hostID is the first 32 bits of md5(hostname) (xySat: from os.hostname(); here the name this agent reports).
`numServers`, `groups` and `commands` come from `joined` and `update`; the enabled switches from `joined.config`
over the agent's saved config. The samples are taken in a thread (asyncio.to_thread): the loop that carries the
jobs' frames never waits for them. The minute can be shortened for tests (`--monitor-interval`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .hostdata import HostData, QuickData
from .monitorplugins import MonitorPlugins

log = logging.getLogger("podium.agent.monitor")

FIRST_DELAY = 1.0  # s after `joined` (xySat: runMonitors({max_sleep_ms: 1}) sleeps 1000 + 0 ms)


def host_id(hostname: str) -> int:
    """xySat's hostID: the md5 of the host name, its first 8 hex digits as a number."""
    return int(hashlib.md5(hostname.encode(), usedforsecurity=False).hexdigest()[:8], 16)


def clamp_servers(num_servers: Any) -> int:
    return min(max(num_servers if isinstance(num_servers, int) and not isinstance(num_servers, bool) else 0, 1), 1000)


def monitor_delay(hid: int, num_servers: Any) -> float:
    """Seconds from the minute boundary to the sample: 1 s plus up to 29 ms per server (at most ~30 s)."""
    return (1000 + hid % (clamp_servers(num_servers) * 29)) / 1000


def quick_delay(hid: int, num_servers: Any) -> float:
    """Seconds from the second boundary to the quickmon frame: up to 1 ms per server (below 1 s)."""
    return (hid % clamp_servers(num_servers)) / 1000


class Sender(Protocol):
    """What the monitor needs of the link."""

    authed: asyncio.Event

    async def send(self, cmd: str, data: Any) -> bool: ...


class HostMonitor:
    """Sends `monitor` and `quickmon` for one agent. `jobs()` gives the running jobs' count and their processes
    (pid -> (job id, figures)); `server_id()` and `saved_config()` read the agent's state when a frame is made."""

    def __init__(self, link: Sender, hostname: str, plugins: MonitorPlugins, *,
                 server_id: Callable[[], str], jobs: Callable[[], tuple[int, dict[int, tuple[str, Any]]]],
                 saved_config: Callable[[], Mapping[str, Any]], interval: float = 60.0) -> None:  # fmt: skip
        self.link = link
        self.hostname = hostname
        self.plugins = plugins
        self.server_id = server_id
        self.jobs = jobs
        self.saved_config = saved_config
        self.interval = interval
        self.host_id = host_id(hostname)
        self.num_servers = 0
        self.groups: list[str] = []
        self.config: dict[str, Any] = {}
        self.data = HostData(hostname)
        self.quick = QuickData()
        self._first = asyncio.Event()
        self.sent = {"monitor": 0, "quickmon": 0}

    # -- what the conductor says ---------------------------------------------------------------------------------
    def joined(self, data: Mapping[str, Any], busy: bool) -> None:
        """`joined`: the server count, groups, monitor plugins and config; a first sample soon unless jobs run."""
        self.num_servers = 0
        self.update(data)
        config = data.get("config")
        self.config = dict(config) if isinstance(config, Mapping) else {}
        if not busy:
            self._first.set()

    def update(self, data: Mapping[str, Any]) -> None:
        """`update` (and `joined`): new `groups`, `commands` or `numServers`."""
        if isinstance(data.get("groups"), list):
            self.groups = [str(g) for g in data["groups"][:1000]]
        if "commands" in data:
            self.plugins.set(data.get("commands"))
        if isinstance(data.get("numServers"), int):
            self.num_servers = data["numServers"]

    def enabled(self, key: str) -> bool:
        value = {**self.saved_config(), **self.config}.get(key, True)
        return value is not False and value not in (0, "0", "false", "")

    # -- the minute sample -----------------------------------------------------------------------------------------
    async def sample(self, date: float) -> dict[str, Any]:
        """One `monitor` frame (plugins run alongside the sample, which is taken in a thread)."""
        count, procs = self.jobs()
        frame = {"version": "1.0", "date": date, "server": self.server_id(), "hostname": self.hostname}
        if not self.enabled("monitoring_enabled"):
            return {**frame, "data": await asyncio.to_thread(self.data.dummy, count)}
        data, commands = await asyncio.gather(asyncio.to_thread(self.data.sample, count, procs),
                                              self.plugins.run_all(self.groups))  # fmt: skip
        data["commands"] = commands
        return {**frame, "data": data}

    async def monitors(self) -> None:
        """Forever: a sample each minute (and one after `joined`), sent while the link is up."""
        while True:
            first = False
            try:
                await asyncio.wait_for(self._first.wait(), self.interval - time.time() % self.interval)
                first = True
            except TimeoutError:
                pass
            self._first.clear()
            if not self.link.authed.is_set():
                continue
            date = time.time()
            delay = FIRST_DELAY if first else monitor_delay(self.host_id, self.num_servers)
            await asyncio.sleep(min(delay, self.interval / 2))
            try:
                frame = await self.sample(date)
            except Exception:  # a reader failing this time must not end the agent's monitoring
                log.exception("monitor_sample_failed")
                continue
            if await self.link.send("monitor", frame):
                self.sent["monitor"] += 1

    # -- quickmon ------------------------------------------------------------------------------------------------
    async def quickmons(self) -> None:
        """Forever: the per-second payload, while the link is up and quickmon is enabled."""
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0)
            if not (self.link.authed.is_set() and self.enabled("monitoring_enabled")
                    and self.enabled("quickmon_enabled")):  # fmt: skip
                continue
            try:
                info = await asyncio.to_thread(self.quick.sample)
                if self.plugins.plugins:
                    info["commands"] = await self.plugins.run_all(self.groups, quick=True)
            except Exception:
                log.exception("quickmon_sample_failed")
                continue
            await asyncio.sleep(quick_delay(self.host_id, self.num_servers))
            if await self.link.send("quickmon", info):
                self.sent["quickmon"] += 1

    # -- a test run from the UI ----------------------------------------------------------------------------------
    async def test_plugin(self, data: Mapping[str, Any]) -> None:
        """`testMonitorPlugin`: run the plugin named and send the request back with its result."""
        plugin = self.plugins.find(data.get("plugin_id"))
        if plugin is None:
            result: Any = "Error: Monitor Plugin not found on server"
            stderr = ""
        else:
            result, stderr = await self.plugins.run(plugin)
        with contextlib.suppress(Exception):
            await self.link.send("monitorPluginTestResult", {**data, "result": result, "stderr": stderr})
