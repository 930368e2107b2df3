"""One agent's socket on a node: the handshake (`hello` -> `hello{nonce,id}` -> `join{token}` -> `joined`), the
frames it sends (reports to the primary's inbox, output to the job's live log) and the commands sent to it. The
node's set of sockets and the tasks serving them are in api/gateway.py."""

from __future__ import annotations

import asyncio
import secrets as pysecrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import structlog
from aiohttp import WSMsgType, web

from cluster.servers import HelloError, merge_join
from storage.families import GROUPS, PLUGINS
from storage.ids import generate_id
from storage.logs import MAX_OFFSET
from storage.servers import valid_server_id

from .agentauth import same, server_token, sha256_hex

if TYPE_CHECKING:
    from .gateway import AgentGateway

log = structlog.get_logger("podium.gateway")
Record = dict[str, Any]

AGENT_MAX_MSG = 64 * 1024 * 1024
AUTH_TIMEOUT_S = 30.0
PING_EVERY_S = 5.0
SILENT_TIMEOUT_S = 30.0
ONLINE_TTL_MS = 10_000  # liveness an agent's entry keeps without a renew (renewed every TOUCH_EVERY_S)
TOUCH_EVERY_S = 2.0
RELAY_BLOCK_MS = 250
MAX_JOB_UPDATE_BYTES = 256 * 1024  # one job's entry in a `jobs` report
MAX_REPORT_BYTES = 1024 * 1024  # one inbox entry: a bigger report is split
MAX_REPORT_JOBS = 10_000
SEND_TIMEOUT_S = 10.0
MAX_HANDSHAKES = 256  # sockets not yet joined, per node: each may send one large frame
LOG_CAP_TTL_S = 60.0  # how long a job's "live here, with this cap" answer is trusted
_HOSTNAME_LEN = 253


class AgentConn:
    """One agent socket on this node."""

    def __init__(self, gateway: AgentGateway, ws: web.WebSocketResponse, ip: str,
                 transport: asyncio.Transport | None = None) -> None:  # fmt: skip
        self.gateway = gateway
        self.ws = ws
        self.ip = ip
        self.transport = transport
        self.counted = False  # holds one of the gateway's handshake places
        self._closing: asyncio.Task[bool] | None = None
        self.conn_id = pysecrets.token_hex(6)
        self.server_id = ""
        self.owner = ""
        self.podium = False
        self.cursor = "0-0"
        self.heard = time.monotonic()
        self.log_caps: dict[str, tuple[int, float]] = {}  # job id -> (log cap, trusted until), live jobs here

    async def send(self, cmd: str, data: Any) -> bool:
        """One frame; False if it did not go out. An agent that does not take it within SEND_TIMEOUT_S (it stopped
        reading) is cut off at once, so it can never hold up the relay or the keepalive of other agents."""
        if self.ws.closed:
            return False
        try:
            await asyncio.wait_for(self.ws.send_str(orjson.dumps({"cmd": cmd, "data": data}).decode()),
                                   SEND_TIMEOUT_S)  # fmt: skip
            return True
        except (ConnectionError, RuntimeError):
            return False
        except TimeoutError:
            log.warning("agent_send_timeout", server=self.server_id, cmd=cmd)
            self.cut()
            return False

    def cut(self) -> None:
        """Drop the connection without waiting (a graceful close waits for a peer that may never read)."""
        if self.transport is not None:
            self.transport.abort()
        else:
            self._closing = asyncio.get_running_loop().create_task(self.ws.close())

    async def _receive(self, timeout: float) -> dict[str, Any] | None:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != WSMsgType.TEXT:
            return None if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR) else {}
        self.heard = time.monotonic()
        try:
            frame = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return {}
        return frame if isinstance(frame, dict) else {}

    async def run(self) -> None:
        try:
            if await self._handshake():
                await self._serve()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:  # a store error or a bug ends this socket (the agent reconnects), not the node
            log.exception("agent_socket_failed", server=self.server_id)
        finally:
            await self.gateway.detach(self)
            if not self.ws.closed:
                try:
                    await asyncio.wait_for(self.ws.close(), 2.0)
                except TimeoutError:
                    self.cut()

    # -- the handshake -----------------------------------------------------------------------
    async def _handshake(self) -> bool:
        try:
            return await self._handshake_steps()
        finally:
            if self.counted:
                self.counted = False
                self.gateway.handshakes -= 1

    async def _handshake_steps(self) -> bool:
        deadline = time.monotonic() + AUTH_TIMEOUT_S
        nonce = ""
        hello: Mapping[str, Any] = {}
        while True:
            frame = await self._receive(max(0.1, deadline - time.monotonic()))
            if frame is None:
                return False
            cmd, data = frame.get("cmd"), frame.get("data")
            if not isinstance(data, Mapping):
                continue
            if cmd == "hello":
                hello = data
                nonce = await self._hello(data)
                if not nonce:
                    return False
            elif cmd == "join" and nonce:
                return await self._join(hello, str(data.get("token", "")), nonce)

    async def _hello(self, data: Mapping[str, Any]) -> str:
        node = self.gateway.node
        info = data.get("info")
        self.podium = isinstance(info, Mapping) and bool(info.get("podium"))
        if not self.podium and not node.is_primary:
            rec = await node.locate_primary()
            host = urlsplit(rec.url).hostname if rec else None
            if host:
                await self.send("redirect", {"host": host, "url": rec.url if rec else ""})
            else:
                await self.send("retry", {})
            return ""
        server_id = str(data.get("id") or "")
        hostname = str(data.get("hostname") or "")[:_HOSTNAME_LEN]
        if server_id and not valid_server_id(server_id):
            await self.send("auth_failure", {"description": "Invalid server id."})
            return ""
        if not server_id:
            server_id = generate_id("s")
        else:
            stored = await node.stores.servers.get(server_id)
            online = await node.stores.servers.owner(server_id)
            if stored is not None and online and stored.get("hostname") not in ("", hostname):
                await self.send("auth_failure", {"description": f"Server id {server_id} is in use by another host."})
                return ""
        self.server_id = server_id
        nonce = pysecrets.token_hex(32)
        await self.send("hello", {"nonce": nonce, "id": server_id})
        return nonce

    async def _join(self, hello: Mapping[str, Any], token: str, nonce: str) -> bool:
        gw = self.gateway
        secret = gw.node.stores.secret_key
        if not token or not (same(token, sha256_hex(nonce + secret)) or
                             same(token, server_token(self.server_id, secret))):  # fmt: skip
            await self.send("auth_failure", {"description": "Authentication failed."})
            log.warning("agent_auth_failed", ip=self.ip, server=self.server_id)
            return False
        stores = gw.node.stores
        groups = await stores.defs.all(GROUPS)
        stored = await stores.servers.get(self.server_id)
        try:
            record = merge_join(stored, {**hello, "id": self.server_id}, time.time(), groups, ip=self.ip)
        except HelloError as exc:
            await self.send("auth_failure", {"description": str(exc)})
            return False
        self.owner = f"{gw.node.node_id}|{self.conn_id}"
        self.cursor = (await stores.agents.cursors([self.server_id]))[self.server_id]
        await stores.servers.join(record, self.owner, ONLINE_TTL_MS)
        await gw.attach(self)
        await stores.agents.post([{"server": self.server_id, "cmd": "joined", "data": {}, "node": gw.node.node_id}])
        from .gateway import monitor_commands

        plugins = [p for p in await stores.defs.all(PLUGINS) if p.get("type", "event") == "event"]
        commands = await monitor_commands(stores)
        masters, urls = gw.masters()
        await self.send("joined", {
            "config": {}, "masterData": {"masters": masters, "urls": urls}, "groups": record.get("groups", []),
            "plugins": plugins, "commands": commands, "numServers": len(await stores.servers.online_ids()),
            "features": {"api_finish_job": True, "log_offsets": True},
        })  # fmt: skip
        log.info("agent_joined", server=self.server_id, hostname=record.get("hostname"), ip=self.ip,
                 podium=self.podium)  # fmt: skip
        return True

    # -- after the handshake -------------------------------------------------------------------
    async def _serve(self) -> None:
        while True:
            frame = await self._receive(SILENT_TIMEOUT_S)
            if frame is None:
                return
            cmd, data = frame.get("cmd"), frame.get("data")
            if cmd == "job_log" and isinstance(data, Mapping):
                await self._job_log(data)
            elif cmd == "jobs" and isinstance(data, Mapping) and data:
                await self._jobs(data)
            elif cmd == "job_meta" and isinstance(data, Mapping):
                await self._report("meta", {"id": str(data.get("id", "")), "text": str(data.get("text", ""))[:1000]})
            elif cmd == "quickmon" and isinstance(data, Mapping):
                self.gateway.monitoring.quick(self.server_id, data)
            elif cmd == "monitor" and isinstance(data, Mapping):
                await self._monitor(data)
            elif cmd in ("notice", "warning", "error", "critical") and isinstance(data, Mapping):
                log.info("agent_notice", level=cmd, server=self.server_id,
                         description=str(data.get("description", ""))[:500])  # fmt: skip

    async def _monitor(self, data: Mapping[str, Any]) -> None:
        """A minute sample. A failure to process it costs that minute only: the socket goes on."""
        try:
            await self.gateway.monitoring.sample(self.server_id, data, self.ip)
        except Exception as exc:  # the store is away, or a bug: logged, and the agent stays connected
            log.warning("monitor_sample_failed", server=self.server_id, error=repr(exc))

    async def _jobs(self, data: Mapping[str, Any]) -> None:
        """A `jobs` report: entries too large on their own are left out (not the whole report, or every job in it
        would miss its update and be taken for dead)."""
        if len(data) > MAX_REPORT_JOBS:
            log.warning("agent_report_too_many_jobs", server=self.server_id, jobs=len(data))
            data = dict(list(data.items())[:MAX_REPORT_JOBS])
        kept: dict[str, Any] = {}
        size = 0
        for job_id, update in data.items():
            entry_bytes = len(orjson.dumps(update, default=str))
            if entry_bytes > MAX_JOB_UPDATE_BYTES:
                log.warning("agent_job_update_too_large", server=self.server_id, job=str(job_id)[:64])
                continue
            if self.podium and isinstance(update, Mapping) and update.get("state") == "complete":
                # Podium's agent finishes through finish_job only; a `jobs` report saying "complete" is the legacy
                # xySat path and would finish the job without its held data.
                update = {**update, "state": "finishing"}
            if kept and size + entry_bytes > MAX_REPORT_BYTES:  # one inbox entry stays bounded
                await self._report("jobs", kept)
                kept, size = {}, 0
            kept[str(job_id)[:64]] = update
            size += entry_bytes
        if kept:
            await self._report("jobs", kept)

    async def _report(self, cmd: str, data: Mapping[str, Any]) -> None:
        entry = {"server": self.server_id, "cmd": cmd, "data": data, "node": self.gateway.node.node_id}
        await self.gateway.node.stores.agents.post([entry])

    async def _job_log(self, data: Mapping[str, Any]) -> None:
        job_id, text = str(data.get("id", "")), data.get("text")
        if not isinstance(text, str):
            return
        now = time.monotonic()
        known = self.log_caps.get(job_id)
        if known is None or known[1] < now:
            cap = await self.gateway.log_cap(job_id, self.server_id)
            if cap is None:
                self.log_caps.pop(job_id, None)
                # Not a live job of this agent (finished here meanwhile): nothing is kept, but the agent hears that
                # it may drop the text, rather than holding the job for its resend window.
                offset = data.get("offset")
                if isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset <= MAX_OFFSET:
                    await self.send("log_ack", {job_id: offset + len(text.encode())})
                return
            self.log_caps[job_id] = known = (cap, now + LOG_CAP_TTL_S)
            if len(self.log_caps) > 10_000:
                self.log_caps.pop(next(iter(self.log_caps)))
        cap = known[0]
        offset = data.get("offset")
        if not (isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset <= MAX_OFFSET):
            offset = None
        received = await self.gateway.node.stores.logs.append(job_id, text, offset, cap)
        if offset is not None:
            await self.send("log_ack", {job_id: received})

    async def deliver(self, frame: Mapping[str, Any]) -> bool:
        """Send one command from the agent's stream (False if it could not go out); `launch_job` is expanded
        from the job record now."""
        cmd, data = str(frame.get("cmd")), frame.get("data") or {}
        if cmd == "launch_job":
            job_id = str(data.get("id"))
            payload = await self.gateway.launch_payload(job_id, self.server_id)
            if payload is None:
                return True  # no longer active on this server (aborted, or finished by a timeout meanwhile)
            # Podium's agent drops a launch it has seen; xySat would run it again, so it gets each job once.
            if not self.podium and not await self.gateway.node.stores.agents.claim_delivery(job_id):
                return True
            # Its output will come here: the job is known to be live on this agent, with this cap.
            self.log_caps[job_id] = (self.gateway.cap_of(payload["job"]), time.monotonic() + LOG_CAP_TTL_S)
            data = payload
        return await self.send(cmd, data)
