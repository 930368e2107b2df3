"""A scripted conductor peer for the agent's tests: it speaks the agent wire protocol and the agent's HTTP calls.

It stands in for a Podium node until the real gateway can be started in these tests. It keeps every frame it
gets, stores job logs by offset (skipping bytes it already has, as a conductor must), acks them unless told
not to, and records uploads and finish_job calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class Peer:
    """One scripted node; `url` once started."""

    server_id: str = "s1"
    token: str = "tok-" + secrets.token_hex(4)
    refuse: bool = False  # answer join with auth_failure
    redirect_to: str | None = None  # answer hello with redirect
    ack: bool = True
    drop_after_log: bool = False  # close the socket at the first job_log (once)
    url: str = ""
    frames: list[tuple[str, Any]] = field(default_factory=list)
    logs: dict[str, bytearray] = field(default_factory=dict)
    uploads: list[tuple[str, str, bytes]] = field(default_factory=list)
    finished: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # served at /files/<path>
    joins: int = 0
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def start(self) -> Peer:
        app = web.Application()
        app.router.add_get("/", self._ws)
        app.router.add_post("/api/app/upload_job_file", self._upload)
        app.router.add_post("/api/app/finish_job", self._finish)
        app.router.add_get("/api/app/satellite/config", self._config)
        app.router.add_get("/files/{path:.+}", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait(self, what: Any, timeout: float = 30) -> None:
        """Until what() is true (checked each time something arrives, and every 50 ms)."""

        async def loop() -> None:
            while not what():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.05)

        await asyncio.wait_for(loop(), timeout)

    def got(self, cmd: str) -> list[Any]:
        return [data for name, data in self.frames if name == cmd]

    async def send(self, cmd: str, data: Any) -> None:
        await self.sockets[-1].send_str(json.dumps({"cmd": cmd, "data": data}))

    def _note(self, cmd: str, data: Any) -> None:
        self.frames.append((cmd, data))
        self.changed.set()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            cmd, data = frame["cmd"], frame["data"]
            self._note(cmd, data)
            if not await self._reply(ws, cmd, data):
                break
        return ws

    async def _reply(self, ws: web.WebSocketResponse, cmd: str, data: Any) -> bool:
        send = ws.send_str
        if cmd == "hello":
            if self.redirect_to:
                await send(json.dumps({"cmd": "redirect", "data": {"host": "ignored", "url": self.redirect_to}}))
                return True
            await send(json.dumps({"cmd": "hello", "data": {"nonce": "n" * 64, "id": self.server_id}}))
        elif cmd == "join":
            if self.refuse or data.get("token") != self.token:
                await send(json.dumps({"cmd": "auth_failure", "data": {"description": "bad token"}}))
                return True
            self.joins += 1
            joined = {"config": {}, "masterData": {"masters": ["127.0.0.1"], "urls": [self.url]}, "groups": [],
                      "plugins": [], "commands": [], "numServers": 1, "features": {"api_finish_job": True}}
            await send(json.dumps({"cmd": "joined", "data": joined}))
        elif cmd == "job_log":
            stored = self.logs.setdefault(data["id"], bytearray())
            chunk = data["text"].encode()
            skip = len(stored) - data["offset"]
            assert skip >= 0, "a gap in the log"
            stored += chunk[skip:]
            if self.drop_after_log:
                self.drop_after_log = False
                await ws.close()
                return False
            if self.ack:
                await send(json.dumps({"cmd": "log_ack", "data": {data["id"]: len(stored)}}))
        return True

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        file = form["file1"]
        assert isinstance(file, web.FileField)
        if form.get("auth") != self.token or form.get("server") != self.server_id:
            return web.json_response({"code": "access", "description": "bad auth"})
        body = file.file.read()
        job_id = str(form["id"])
        self.uploads.append((job_id, file.filename, body))
        self.changed.set()
        return web.json_response({"code": 0, "key": f"files/jobs/{job_id}/k/{file.filename}", "size": len(body)})

    async def _finish(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("auth") != self.token:
            return web.json_response({"code": "access", "description": "bad auth"})
        self.finished[body["id"]] = body
        self.changed.set()
        return web.json_response({"code": 0})

    async def _file(self, request: web.Request) -> web.Response:
        if request.query.get("auth") != self.token or request.query.get("server") != self.server_id:
            return web.Response(status=403)
        body = self.files.get(request.match_info["path"])
        return web.Response(status=404) if body is None else web.Response(body=body)

    async def _config(self, request: web.Request) -> web.Response:
        if request.query.get("t") != "good-key":
            return web.json_response({"code": "api", "description": "Invalid API Key"})
        return web.json_response({"code": 0, "server_id": self.server_id, "auth_token": self.token,
                                  "hosts": ["127.0.0.1"]})  # fmt: skip
