"""The agent WebSocket gateway: xySat frames in and out, on every node (primary and satellites).

An agent connects to `ws://host:port/` (the upgrade of `/`; a plain GET of `/` stays free). Frames are JSON text
`{"cmd", "data"}` both ways. Handshake: `hello` -> `hello {nonce, id}` -> `join {token}` -> `joined`. The token is
sha256_hex(nonce + secret_key) or the per-server sha256_hex(server_id + secret_key). Unauthenticated sockets are
closed after 30 s, silent ones after 30 s (an `echo` goes out every 5 s); agent messages may be up to 64 MiB
(xySat sends log batches of up to 32 MiB), every other socket keeps aiohttp's small default.

What arrives is handed on through Redis: job reports go to the primary's inbox stream (the primary alone
changes job state), log output is appended to the job's live log right here (any node may), and commands for the
agent are read from its stream and sent on the socket. So an agent may use any node, and when the node holding
its socket dies it reconnects to another one and its jobs carry on (xyOps sends agents to the primary only).

Foreign agents (xySat itself) are sent to the primary with `redirect {host}`, as xyOps does: xySat finishes a
job only after `GET /health` on the node it is connected to says `master: true`, and it reconnects to the
redirect host on its own port, so it must sit on the primary (and every node must listen on the same port for
it). Podium's own agent says so in `hello.info.podium`; it finishes through whichever node it is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from cluster import __version__
from cluster.dispatch.limits import first_limit
from cluster.monitoring.intake import MonitorIntake
from cluster.node import NodeRuntime
from storage.connection import UNAVAILABLE_ERRORS, Database
from storage.families import PLUGINS
from storage.ids import generate_id
from storage.stores import Stores

from .agentconn import (
    AGENT_MAX_MSG,
    MAX_HANDSHAKES,
    ONLINE_TTL_MS,
    PING_EVERY_S,
    RELAY_BLOCK_MS,
    SILENT_TIMEOUT_S,
    TOUCH_EVERY_S,
    AgentConn,
)
from .settings import Settings
from .typedefs import NODE, SETTINGS

log = structlog.get_logger("podium.gateway")
Record = dict[str, Any]


class AgentGateway:
    """Every agent socket this node holds, and the tasks that serve them."""

    def __init__(self, node: NodeRuntime, settings: Settings) -> None:
        self.node = node
        self.settings = settings
        self.conns: dict[str, AgentConn] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._own: Database | None = None
        self.handshakes = 0  # sockets between upgrade and join
        self.monitoring = MonitorIntake(node)  # the samples of the agents held here

    # -- connections ---------------------------------------------------------------------------
    async def attach(self, conn: AgentConn) -> None:
        old = self.conns.get(conn.server_id)
        self.conns[conn.server_id] = conn
        if old is not None and old is not conn:
            old.server_id = ""  # its detach must not take the new socket's entry away
            old.cut()

    async def detach(self, conn: AgentConn) -> None:
        if not conn.server_id or self.conns.get(conn.server_id) is not conn:
            return
        del self.conns[conn.server_id]
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            if await self.node.stores.servers.leave(conn.server_id, conn.owner):
                await self.node.stores.agents.post([{"server": conn.server_id, "cmd": "left", "data": {},
                                                     "node": self.node.node_id}])  # fmt: skip
        log.info("agent_left", server=conn.server_id)

    def masters(self) -> tuple[list[str], list[str]]:
        """Hosts (for xySat, which adds its own port) and base URLs (for Podium's agent) of the live nodes."""
        urls = sorted({n.record.url for n in self.node.registry.view if n.record.url} | {self.node.url})
        hosts = sorted({urlsplit(u).hostname or "" for u in urls} - {""})
        return hosts, urls

    async def log_cap(self, job_id: str, server_id: str) -> int | None:
        """The log cap of a live job of this agent, or None when it is not one."""
        job = await self.node.stores.jobs.get(job_id)
        if job is None or job.get("state") == "complete" or job.get("server") != server_id:
            return None
        return self.cap_of(job)

    def cap_of(self, job: Mapping[str, Any]) -> int:
        """A job's log cap: the global maximum, or its `log` limit when lower."""
        cap = int(self.settings.job_log_max_bytes)
        limit = first_limit(job, "log")
        amount = limit.get("amount") if limit else None
        if isinstance(amount, int) and not isinstance(amount, bool) and amount > 0:
            cap = min(cap, amount)
        return cap

    async def launch_payload(self, job_id: str, server_id: str) -> dict[str, Any] | None:
        stores = self.node.stores
        job = await stores.jobs.get(job_id)
        if job is None or job.get("state") != "active" or job.get("server") != server_id:
            return None
        server = await stores.servers.get(server_id) or {}
        details = {"input": job.get("input") or {}, "serverData": server.get("userData") or {},
                   "versions": {"podium": __version__}}  # fmt: skip
        if job.get("workflowData"):
            details["workflowData"] = job["workflowData"]
        return {"job": job, "details": details, "sec": await job_secrets(self.node, job)}

    # -- lifecycle -------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /: an agent's WebSocket upgrade, else a short plain answer (the place of a UI)."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(text="Podium\n", content_type="text/plain")
        if self.handshakes >= MAX_HANDSHAKES:
            return web.Response(status=503, text="Too many agents joining; try again.\n")
        self.handshakes += 1  # counted from here, so concurrent upgrades cannot all slip past the check
        conn: AgentConn | None = None
        try:
            ws = web.WebSocketResponse(max_msg_size=AGENT_MAX_MSG, autoping=True, compress=False)
            await ws.prepare(request)
            conn = AgentConn(self, ws, request.remote or "", request.transport)
            conn.counted = True
        finally:
            if conn is None:
                self.handshakes -= 1
        await conn.run()
        return ws

    async def start(self) -> None:
        self._own = self.node.db.with_own_pool(2, client_name="podium-relay")
        self._tasks = [asyncio.create_task(self._relay()), asyncio.create_task(self._keepalive())]
        await self.monitoring.start()

    async def stop(self) -> None:
        self._stop.set()
        for conn in list(self.conns.values()):
            await conn.ws.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.monitoring.stop()
        if self._own is not None:
            await self._own.aclose()

    async def _keepalive(self) -> None:
        """Renew liveness, close sockets a newer one replaced, drop silent ones and echo the rest (all at once:
        one slow agent delays no other)."""
        last_touch = 0.0
        while not self._stop.is_set():
            await asyncio.sleep(PING_EVERY_S if not self.conns else min(PING_EVERY_S, TOUCH_EVERY_S))
            try:
                now = time.monotonic()
                if now - last_touch >= TOUCH_EVERY_S and self.conns:
                    last_touch = now
                    await self._touch()
                echo = {"id": generate_id("e"), "last_ping_ms": int(time.time() * 1000)}
                sends = []
                for conn in list(self.conns.values()):
                    if now - conn.heard > SILENT_TIMEOUT_S:
                        conn.cut()
                    else:
                        sends.append(conn.send("echo", echo))
                await asyncio.gather(*sends)
            except Exception as exc:  # keep the keepalive alive
                log.warning("agent_keepalive_failed", error=repr(exc))

    async def _touch(self) -> None:
        owned = {sid: c.owner for sid, c in self.conns.items()}
        lost = await self.node.stores.servers.touch(owned, ONLINE_TTL_MS)
        for sid in lost:
            replaced = self.conns.pop(sid, None)
            if replaced is not None:
                replaced.server_id = ""  # replaced: its detach must not mark the server offline
                replaced.cut()

    async def _relay(self) -> None:
        """Commands from the agents' streams to their sockets."""
        assert self._own is not None
        agents = self.node.stores.agents
        while not self._stop.is_set():
            if not self.conns:
                await asyncio.sleep(0.05)
                continue
            cursors = {sid: c.cursor for sid, c in self.conns.items()}
            try:
                batch = await agents.read_commands(cursors, block_ms=RELAY_BLOCK_MS, client=self._own.client)
            except Exception as exc:
                log.warning("relay_read_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            sent: dict[str, str] = {}
            await asyncio.gather(*(self._deliver_all(sid, entries, sent) for sid, entries in batch.items()))
            try:
                await agents.save_cursors(sent)
            except Exception as exc:
                log.warning("relay_cursor_save_failed", error=repr(exc))

    async def _deliver_all(self, sid: str, entries: list[tuple[str, Record]], sent: dict[str, str]) -> None:
        """One agent's new commands, in order; the cursor moves only past what went out."""
        conn = self.conns.get(sid)
        if conn is None:
            return
        for entry_id, frame in entries:
            try:
                if not await conn.deliver(frame):
                    return  # the socket is going: the node the agent reconnects to sends it from here
            except Exception as exc:
                log.warning("relay_deliver_failed", server=sid, error=repr(exc))
                return
            conn.cursor = sent[sid] = entry_id


async def job_secrets(node: NodeRuntime, job: Mapping[str, Any]) -> dict[str, str]:
    """`sec` of launch_job: the variables of every secret granted to the job's event, category or plugin."""
    from .handlers.secrets import granted_variables  # the secret box lives with the secrets handlers

    return await granted_variables(node.stores, dict(job))


async def monitor_commands(stores: Stores) -> list[dict[str, Any]]:
    """`commands` of `joined` and of `update`: the monitor plugins with their secrets opened (xyOps
    getCommandsWithSecrets, digest 5.1). ⚠ xyOps sends disabled ones too and xySat runs them; only enabled ones go."""
    from .handlers.secrets import granted_variables  # the secret box lives with the secrets handlers

    monitor = [p for p in await stores.defs.all(PLUGINS) if p.get("type") == "monitor" and p.get("enabled", True)]
    return [{**p, "sec": await granted_variables(stores, {"plugin": p.get("id")}), "uid": p.get("uid") or "",
             "gid": p.get("gid") or ""} for p in monitor]  # fmt: skip


async def send_commands(stores: Stores) -> int:
    """Tell every online agent the monitor plugins as they are now (a plugin or a secret changed)."""
    commands = await monitor_commands(stores)
    online = await stores.servers.online_ids()
    for server_id in online:
        await stores.agents.send(server_id, "update", {"commands": commands})
    return len(online)


async def _on_startup(app: web.Application) -> None:
    await app[GATEWAY].start()


async def _on_shutdown(app: web.Application) -> None:
    await app[GATEWAY].stop()


GATEWAY = web.AppKey("gateway", AgentGateway)


def install(app: web.Application) -> None:
    """Route `/` to the gateway and run it with the app."""
    gateway = AgentGateway(app[NODE], app[SETTINGS])
    app[GATEWAY] = gateway
    app[NODE].metrics.agents = lambda: len(gateway.conns)
    app.router.add_get("/", gateway.handle)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
