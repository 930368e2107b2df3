"""The agent's host metrics on the wire: a real `podium agent` (serve()) sends `quickmon` each second and
`monitor` right after `joined` and then each interval, with its monitor plugins' output in `commands`.

- Against a real `podium serve` node, through a recording WebSocket relay between the two (the node does not
  keep these frames yet): `joined` carries the enabled monitor plugins with their secrets opened, and the
  agent's `monitor` has the plugin's output made with that secret, and the stock `open_files` plugin's.
- Against a scripted conductor (the frames a node does not send on demand): the interval sample, a plugin whose
  output the test changes, `update {commands}`, quick plugins in `quickmon`, `testMonitorPlugin`, and the
  `dummy` record with no quickmon when `monitoring_enabled` is false.

The minute is shortened with AgentConfig.monitor_interval (`--monitor-interval`, for tests only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from cluster.agent.main import AgentConfig, serve
from tests.jobkit import SECRET, Jobs, token
from tests.servers import Cluster

pytestmark = pytest.mark.timeout(180)
Frame = tuple[str, str, Any]  # (direction "up" agent->conductor | "down", cmd, data)


@dataclass
class Wire:
    """Frames seen, and a way to wait for one."""

    frames: list[Frame] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, direction: str, raw: str) -> None:
        frame = json.loads(raw)
        self.frames.append((direction, frame.get("cmd"), frame.get("data")))
        self.changed.set()

    def got(self, cmd: str, direction: str = "up") -> list[Any]:
        return [data for way, name, data in self.frames if name == cmd and way == direction]

    async def wait(self, what: Callable[[], Any], timeout: float = 60) -> Any:
        async def loop() -> Any:
            while not (found := what()):
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.1)
            return found

        return await asyncio.wait_for(loop(), timeout)


async def start_site(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def relay(target: str, wire: Wire) -> AsyncIterator[str]:
    """A WebSocket relay to `target`'s `/` that records every frame both ways; yields its URL."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        down = web.WebSocketResponse(max_msg_size=0)
        await down.prepare(request)
        async with aiohttp.ClientSession() as session, session.ws_connect(target + "/", max_msg_size=0) as up:

            async def agent_to_node() -> None:
                async for msg in down:
                    if msg.type == WSMsgType.TEXT:
                        wire.add("up", msg.data)
                        await up.send_str(msg.data)
                await up.close()

            async def node_to_agent() -> None:
                async for msg in up:
                    if msg.type == WSMsgType.TEXT:
                        wire.add("down", msg.data)
                        await down.send_str(msg.data)
                await down.close()

            await asyncio.gather(agent_to_node(), node_to_agent(), return_exceptions=True)
        return down

    app = web.Application()
    app.router.add_get("/", handle)
    runner, url = await start_site(app)
    try:
        yield url
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def agent(config: AgentConfig) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


# -- a real node ------------------------------------------------------------------------------------------------


async def test_a_real_node_sends_its_monitor_plugins_and_the_agent_reports_their_output(tmp_path: Path) -> None:
    wire = Wire()
    async with Cluster(tmp_path / "cluster", size=1, extra=("--secret-key", SECRET)) as c:
        node = await c.wait_single_primary()
        jobs = await Jobs.login(c, node)
        probe = (await jobs.ok(node, "create_plugin", {"title": "Probe", "type": "monitor", "command": "/bin/sh",
                                                       "script": 'echo "probe=$PROBE_SECRET"'}))["plugin"]  # fmt: skip
        off = (await jobs.ok(node, "create_plugin", {"title": "Off", "type": "monitor", "command": "/bin/true",
                                                     "enabled": False}))["plugin"]  # fmt: skip
        secret = {"title": "Probe key", "plugins": [probe["id"]],
                  "fields": [{"name": "PROBE_SECRET", "value": "v-7h1s-s3cr3t"}]}  # fmt: skip
        await jobs.ok(node, "create_secret", secret)
        async with relay(node.url, wire) as url:
            config = AgentConfig(urls=(url,), token=token("sm"), server_id="sm", data_dir=tmp_path / "agent",
                                 hostname="box1")  # fmt: skip
            async with agent(config):
                (joined,) = await wire.wait(lambda: wire.got("joined", "down"))
                monitor = (await wire.wait(lambda: wire.got("monitor")))[0]
                await wire.wait(lambda: wire.got("quickmon"))
        log_text = node.log_text()
    commands = {c["id"]: c for c in joined["commands"]}
    assert set(commands) == {"open_files", probe["id"]} and off["id"] not in commands  # enabled ones only
    assert commands[probe["id"]]["sec"] == {"PROBE_SECRET": "v-7h1s-s3cr3t"}
    assert commands[probe["id"]]["script"] == 'echo "probe=$PROBE_SECRET"' and commands["open_files"]["sec"] == {}
    assert commands[probe["id"]]["uid"] == "" and commands[probe["id"]]["gid"] == ""
    assert joined["numServers"] == 1
    assert "v-7h1s-s3cr3t" not in log_text  # no secret in the node's log
    assert (monitor["version"], monitor["server"], monitor["hostname"]) == ("1.0", "sm", "box1")
    assert isinstance(monitor["date"], float)
    data = monitor["data"]
    assert data["commands"][probe["id"]] == "probe=v-7h1s-s3cr3t"
    if sys.platform.startswith("linux"):
        assert re.search(r"(\d+)", data["commands"]["open_files"])
    assert data["jobs"] == 0 and data["mounts"]["root"]["use"] >= 0 and data["processes"]["all"] > 0


# -- a scripted conductor ----------------------------------------------------------------------------------------


@dataclass
class Conductor:
    """Speaks the handshake and answers `joined` with what the test sets."""

    joined: dict[str, Any]
    wire: Wire = field(default_factory=Wire)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    token: str = "tok-hostdata"

    async def start(self) -> Conductor:
        app = web.Application()
        app.router.add_get("/", self._ws)
        self._runner, self.url = await start_site(app)
        return self

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def send(self, cmd: str, data: Any) -> None:
        await self.sockets[-1].send_str(json.dumps({"cmd": cmd, "data": data}))

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            self.wire.add("up", msg.data)
            frame = json.loads(msg.data)
            if frame["cmd"] == "hello":
                await ws.send_str(json.dumps({"cmd": "hello", "data": {"nonce": "n" * 64, "id": "s1"}}))
            elif frame["cmd"] == "join" and frame["data"].get("token") == self.token:
                base = {"config": {}, "masterData": {"masters": ["127.0.0.1"], "urls": [self.url]},
                        "groups": ["main"], "plugins": [], "commands": [], "numServers": 3,
                        "features": {"api_finish_job": True}}  # fmt: skip
                await ws.send_str(json.dumps({"cmd": "joined", "data": {**base, **self.joined}}))
        return ws


@contextlib.asynccontextmanager
async def scripted(tmp_path: Path, interval: float, **joined: Any) -> AsyncIterator[Conductor]:
    conductor = await Conductor(joined).start()
    config = AgentConfig(urls=(conductor.url,), token=conductor.token, server_id="s1", data_dir=tmp_path / "agent",
                         hostname="box1", monitor_interval=interval)  # fmt: skip
    try:
        async with agent(config):
            yield conductor
    finally:
        await conductor.stop()


def outputs(wire: Wire, plugin_id: str) -> list[Any]:
    return [m["data"].get("commands", {}).get(plugin_id) for m in wire.got("monitor")]


async def test_samples_each_interval_with_the_plugins_output_as_it_changes(tmp_path: Path) -> None:
    value = tmp_path / "value.txt"
    value.write_text("1")
    commands = [{"id": "probe", "command": "/bin/sh", "script": f"cat {value}", "groups": [], "format": "text"},
                {"id": "fast", "command": "/bin/echo quick", "quick": True, "groups": []},
                {"id": "elsewhere", "command": "/bin/echo no", "groups": ["db"]}]  # fmt: skip
    async with scripted(tmp_path, 2.0, commands=commands) as conductor:
        wire = conductor.wire
        await wire.wait(lambda: "1" in outputs(wire, "probe"))
        value.write_text("2")  # the plugin's output, controlled here: a later sample has the new one
        await wire.wait(lambda: "2" in outputs(wire, "probe"))
        await wire.wait(lambda: len(wire.got("quickmon")) >= 3)
        await conductor.send("update", {"commands": [{"id": "other", "command": "/bin/echo updated"}]})
        await wire.wait(lambda: "updated" in outputs(wire, "other"))
        await conductor.send("testMonitorPlugin", {"plugin_id": "other", "request_id": "r1"})
        (tested,) = await wire.wait(lambda: wire.got("monitorPluginTestResult"))
        await conductor.send("testMonitorPlugin", {"plugin_id": "gone", "request_id": "r2"})
        await wire.wait(lambda: len(wire.got("monitorPluginTestResult")) == 2)
    monitors = wire.got("monitor")
    assert all(m["data"]["commands"].get("elsewhere") is None for m in monitors)  # not in this server's groups
    dates = [m["date"] for m in monitors]
    assert dates == sorted(dates) and len(monitors) >= 3
    quick = wire.got("quickmon")
    assert all(set(q) == {"mem", "cpu", "fs", "net", "commands"} for q in quick[:3])
    assert quick[0]["commands"] == {"fast": "quick"} and 0 <= quick[0]["cpu"]["currentLoad"] <= 100
    assert tested == {"plugin_id": "other", "request_id": "r1", "result": "updated", "stderr": ""}
    assert wire.got("monitorPluginTestResult")[1]["result"] == "Error: Monitor Plugin not found on server"


async def test_with_monitoring_disabled_a_dummy_record_goes_and_no_quickmon(tmp_path: Path) -> None:
    async with scripted(tmp_path, 2.0, config={"monitoring_enabled": False}) as conductor:
        wire = conductor.wire
        await wire.wait(lambda: len(wire.got("monitor")) >= 2)  # the one after joined, and an interval's
    first, second = wire.got("monitor")[:2]
    assert first["data"]["dummy"] is True and second["data"]["dummy"] is True
    assert first["data"]["memory"] == {} and first["data"]["commands"] == {} and first["data"]["jobs"] == 0
    assert wire.got("quickmon") == []
