"""`[hook-plugin]`: fires one of the conductor's web hooks for this job (`fire_job_web_hook`), as xySat does."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from ..plugin import BuiltinPlugin, Launch, Sink

TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10)
MAX_REPLY = 1024 * 1024


class HookPlugin(BuiltinPlugin):
    """Asks the connected conductor to fire the `web_hook` param's hook with the `text` param."""

    async def work(self, launch: Launch, sink: Sink) -> int:
        url = launch.base_url.rstrip("/") + "/api/app/fire_job_web_hook/v1"
        payload = {"job": launch.job.get("id"), "server": launch.job.get("server"),
                   "web_hook": launch.params.get("web_hook"), "text": launch.params.get("text") or ""}  # fmt: skip
        sink.stdout(f"Firing web hook via API: {url}\n".encode())
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(url, json=payload) as resp:
                raw = await resp.content.read(MAX_REPLY + 1)
                if len(raw) > MAX_REPLY:
                    raise ValueError("reply too large")
                data: Any = json.loads(raw or b"{}")
                if resp.status >= 400 and not isinstance(data, dict):
                    raise ValueError(f"HTTP {resp.status} {resp.reason}")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            sink.stdout(f"Error: {exc}\n".encode())
            sink.record({"xy": 1, "code": 1, "description": str(exc) or type(exc).__name__})
            return 0
        if not isinstance(data, dict):
            data = {"code": 1, "description": "Unexpected reply"}
        if data.get("code"):
            description = str(data.get("description") or "(Unknown Error)")
            sink.stdout(f"Web Hook failed: {description}\n".encode())
            sink.record({"xy": 1, "code": data["code"], "description": description, "data": data})
            return 0
        description = str(data.get("description") or "Success")
        sink.stdout(f"Web Hook successful: {description}\n".encode())
        sink.record({"xy": 1, "code": 0, "description": description, "data": data,
                     "markdown": {"title": "Web Hook Details",
                                  "content": str(data.get("details") or "(No details provided)")}})  # fmt: skip
        return 0
