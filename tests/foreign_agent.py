"""A minimal foreign agent, written from the frames in the protocol reference (not with Podium's agent code),
behaving as xySat does where it matters to a conductor:

- it connects to `ws://HOST:PORT/` (path `/`, no extra headers) and says `hello` without `info.podium`;
- on `redirect {host}` it reconnects to that host on the same port; on `retry` or a lost socket it reconnects
  to the next of the hosts `joined` named; on `auth_failure` it stops; it reads `joined.masterData.masters` and
  answers every `echo` with `echoback`;
- it runs a `launch_job` by reporting progress (`jobs`) and output (`job_log`, no offsets), then `finishing`;
- to finish it polls `GET /health` on the node it is connected to until `master` is true, uploads a file
  (multipart `file1`, `id`, `auth`), and posts `finish_job`, retrying each every second, to that same node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ForeignAgent:
    host: str
    port: int
    secret_key: str
    hostname: str = "foreign.example"
    server_id: str = ""
    lines: int = 3
    code: int | str = 0
    hosts_seen: list[str] = field(default_factory=list)  # every host it connected to, in order
    masters: list[str] = field(default_factory=list)
    launched: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    echoes: int = 0
    auth_failed: str = ""
    _task: asyncio.Task[None] | None = None
    _http: aiohttp.ClientSession | None = None
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _jobs: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> ForeignAgent:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        for task in [self._task, *self._jobs]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        assert self._http is not None
        host, delay, attempts = self.host, 0.2, 0
        while not self.auth_failed:
            self.hosts_seen.append(host)
            redirect = None
            try:
                async with self._http.ws_connect(f"ws://{host}:{self.port}/", max_msg_size=0) as ws:
                    self._ws = ws
                    redirect = await self._session(ws, host)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            self._ws = None
            if redirect:
                host = redirect
                continue
            # xySat connects to a random one of its hosts each time; cycling through them is the same, in order.
            attempts += 1
            host = self.masters[attempts % len(self.masters)] if self.masters else self.host
            await asyncio.sleep(delay)

    @property
    def joined(self) -> bool:
        return self._ws is not None and not self._ws.closed and bool(self.masters)

    async def monitor(self, data: dict[str, Any]) -> None:
        """Send one minute sample (`monitor`), as xySat frames it."""
        await self._send("monitor", {"version": "1.0", "date": time.time(), "server": self.server_id,
                                     "hostname": self.hostname, "data": data})  # fmt: skip

    async def quickmon(self, data: dict[str, Any]) -> None:
        await self._send("quickmon", data)

    async def _send(self, cmd: str, data: Any) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_str(json.dumps({"cmd": cmd, "data": data}))

    async def _session(self, ws: aiohttp.ClientWebSocketResponse, host: str) -> str | None:
        await self._send("hello", {"hostname": self.hostname, "id": self.server_id,
                                   "info": {"satellite": "1.0.39", "os": {"platform": "linux"}}})  # fmt: skip
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            cmd, data = frame.get("cmd"), frame.get("data") or {}
            if cmd == "redirect":
                return str(data["host"])
            if cmd == "retry":
                return None
            if cmd == "auth_failure":
                self.auth_failed = str(data.get("description", "?"))
                return None
            if cmd == "hello":
                self.server_id = self.server_id or str(data["id"])
                await self._send("join", {"token": sha256_hex(str(data["nonce"]) + self.secret_key)})
            elif cmd == "joined":
                self.masters = list(data["masterData"]["masters"])
            elif cmd == "echo":
                self.echoes += 1
                await self._send("echoback", data)
            elif cmd == "launch_job":
                job = data["job"]
                self.launched.append(job["id"])
                task = asyncio.create_task(self._job(job, host))
                self._jobs.add(task)
                task.add_done_callback(self._jobs.discard)
        return None

    async def _job(self, job: dict[str, Any], host: str) -> None:
        job_id = job["id"]
        for i in range(1, self.lines + 1):
            await self._send("job_log", {"id": job_id, "text": f"line {i}\n"})
            await self._send("jobs", {job_id: {"progress": i / self.lines, "status": f"step {i}"}})
            await asyncio.sleep(0.05)
        await self._send("jobs", {job_id: {"state": "finishing", "complete": True, "progress": 1.0}})
        base = f"http://{host}:{self.port}"
        await self._health(base)
        auth = sha256_hex(job_id + self.secret_key)
        files = [await self._retry(lambda: self._upload(base, job_id, auth))]
        final = {"id": job_id, "auth": auth, "job": {**job, "state": "complete", "complete": True, "code": self.code,
                                                     "description": "" if not self.code else "failed",
                                                     "files": files, "data": {"answer": 42},
                                                     "serverData": {"last_job": job_id}}}  # fmt: skip
        await self._retry(lambda: self._post(f"{base}/api/app/finish_job", final))
        self.finished.append(job_id)

    async def _health(self, base: str) -> None:
        assert self._http is not None
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
                async with self._http.get(base + "/health") as resp:
                    if (await resp.json()).get("master"):
                        return
            await asyncio.sleep(1.0)

    async def _retry(self, step: Any) -> Any:
        while True:
            try:
                return await step()
            except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError):
                await asyncio.sleep(1.0)

    async def _upload(self, base: str, job_id: str, auth: str) -> dict[str, Any]:
        assert self._http is not None
        form = aiohttp.FormData()
        form.add_field("id", job_id)
        form.add_field("auth", auth)
        form.add_field("file1", b"report from a foreign agent\n", filename="Report.TXT", content_type="text/plain")
        async with self._http.post(f"{base}/api/app/upload_job_file", data=form) as resp:
            reply = await resp.json()
        if resp.status != 200 or reply.get("code"):
            raise RuntimeError(f"upload refused: {reply}")
        return {"id": "f" + job_id[1:], "date": int(time.time()), "filename": "report.txt", "path": reply["key"],
                "size": reply["size"], "server": self.server_id, "job": job_id}  # fmt: skip

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        async with self._http.post(url, json=body) as resp:
            reply: dict[str, Any] = await resp.json()
        if resp.status != 200 or reply.get("code"):
            raise RuntimeError(f"refused: {reply}")
        return reply
