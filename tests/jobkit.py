"""Helpers for tests that run real jobs: real `podium serve` nodes, real agents, real plugin processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.servers import AgentProcess, Cluster, Node

SECRET = "jobs-test-secret"
Reply = dict[str, Any]


def token(server_id: str, secret: str = SECRET) -> str:
    return hashlib.sha256((server_id + secret).encode()).hexdigest()


class Jobs:
    """API calls of one test, as the admin, on any node."""

    def __init__(self, cluster: Cluster, headers: dict[str, str]) -> None:
        self.c = cluster
        self.headers = headers

    @classmethod
    async def login(cls, cluster: Cluster, node: Node) -> Jobs:
        return cls(cluster, await cluster.admin_session(node))

    async def call(self, node: Node, api: str, body: Reply | None = None, *, method: str = "POST") -> tuple[int, Reply]:
        assert self.c.http is not None
        url = f"{node.url}/api/app/{api}/v1"
        if method == "GET":
            async with self.c.http.get(url, params={k: str(v) for k, v in (body or {}).items()},
                                       headers=self.headers) as resp:  # fmt: skip
                return resp.status, await resp.json(content_type=None)
        async with self.c.http.post(url, json=body or {}, headers=self.headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, node: Node, api: str, body: Reply | None = None, *, method: str = "POST") -> Reply:
        status, data = await self.call(node, api, body, method=method)
        assert (status, data.get("code")) == (200, 0), (api, status, data)
        return data

    async def event(self, node: Node, script: str = "", **changes: Any) -> str:
        body: Reply = {"title": "Job test", "enabled": True, "category": "general", "plugin": "shellplug",
                       "targets": ["main"], "algo": "random", "triggers": [{"type": "manual", "enabled": True}],
                       "params": {"script": script, "annotate": False}}  # fmt: skip
        body.update(changes)
        return str((await self.ok(node, "create_event", body))["event"]["id"])

    async def run(self, node: Node, event_id: str, **extra: Any) -> str:
        return str((await self.ok(node, "run_event", {"id": event_id, **extra}))["id"])

    async def job(self, node: Node, job_id: str) -> Reply:
        reply = await self.ok(node, "get_job", {"id": job_id}, method="GET")
        return dict(reply["job"])

    async def wait_job(self, node: Node, job_id: str, *states: str, timeout: float = 60.0) -> Reply:
        """The job once its state is one of `states` (default: complete)."""
        wanted = states or ("complete",)
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(node, job_id)
            if job.get("state") in wanted:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job.get('state')} after {timeout} s: {job}")
            await asyncio.sleep(0.05)

    async def log(self, node: Node, job_id: str) -> str:
        """The job's log through view_job_log (live while running, stored once complete)."""
        assert self.c.http is not None
        reply = await self.ok(node, "get_job", {"id": job_id}, method="GET")
        url = f"{node.url}/api/app/view_job_log/v1"
        async with self.c.http.get(url, params={"id": job_id, "t": reply["token"]}) as resp:
            return await resp.text() if resp.status == 200 else ""

    async def servers(self, node: Node) -> list[Reply]:
        return list((await self.ok(node, "get_active_servers", method="GET"))["rows"])

    async def wait_servers(self, node: Node, count: int, timeout: float = 60.0) -> list[Reply]:
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.servers(node)
            if len(rows) >= count:
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(rows)} of {count} agents online after {timeout} s")
            await asyncio.sleep(0.1)


def agent(root: Path, name: str, *urls: str, extra: tuple[str, ...] = ()) -> AgentProcess:
    server_id = f"s{name}"
    return AgentProcess(root / f"agent-{name}", urls, server_id, token(server_id), extra=extra)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


async def http_get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as resp:
        return resp.status, await resp.read()
