"""The agent's HTTP calls to the node it is joined to: enrolment, input files, job file uploads, finish_job.

Every node answers these from agents, so they go to the connected node's base URL, authenticated with the
server id and the per-server token (`server`, `auth`). Replies are bounded in size.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

MAX_REPLY = 1024 * 1024
FILE_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10, sock_read=30)
CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)
_UNSAFE_NAME = re.compile(r"[^\w\-+.,\s()\[\]{}'\"!&^%$#@*?~]+")


class CallError(Exception):
    """A call did not succeed: `code` is the conductor's error code when it answered with one."""

    def __init__(self, message: str, code: Any = None) -> None:
        super().__init__(message)
        self.code = code


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    raw = await resp.content.read(MAX_REPLY + 1)
    if len(raw) > MAX_REPLY:
        raise CallError("reply too large")
    try:
        value = json.loads(raw)
    except ValueError:
        raise CallError(f"HTTP {resp.status}: not JSON") from None
    if not isinstance(value, dict):
        raise CallError(f"HTTP {resp.status}: not a JSON object")
    return value


async def enrol(session: aiohttp.ClientSession, base_url: str, key: str) -> dict[str, Any]:
    """`satellite/config?t=KEY`: {server_id, auth_token, hosts, ...} for a new server (CallError on refusal)."""
    async with session.get(f"{base_url}/api/app/satellite/config", params={"t": key}, timeout=CALL_TIMEOUT) as resp:
        reply = await _json(resp)
    if reply.get("code") or not isinstance(reply.get("server_id"), str) or not reply.get("auth_token"):
        raise CallError(str(reply.get("description") or f"HTTP {resp.status}: enrolment refused"),
                        reply.get("code"))  # fmt: skip
    return reply


class Conductor:
    """HTTP calls as one server of the cluster."""

    def __init__(self, session: aiohttp.ClientSession, server_id: str, token: str) -> None:
        self.session = session
        self.server_id = server_id
        self.token = token

    def _auth(self) -> dict[str, str]:
        return {"server": self.server_id, "auth": self.token}

    async def download(self, base_url: str, file: Mapping[str, Any], dest: Path) -> None:
        path = str(file["path"]).lstrip("/")
        url = f"{base_url}/{path}" if path.startswith("files/") else f"{base_url}/files/{path}"
        async with self.session.get(url, params=self._auth(), timeout=FILE_TIMEOUT) as resp:
            if resp.status != 200:
                raise CallError(f"HTTP {resp.status} {resp.reason}")
            with open(dest, "wb") as handle:  # noqa: ASYNC230 (chunks to a local file)
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    handle.write(chunk)

    async def upload(self, base_url: str, job_id: str, path: Path, filename: str) -> dict[str, Any]:
        """One job file; the File object the job lists."""
        name = _UNSAFE_NAME.sub("_", os.path.basename(filename)) or "file"
        form = aiohttp.FormData()
        form.add_field("id", job_id)
        for key, value in self._auth().items():
            form.add_field(key, value)
        with open(path, "rb") as handle:  # noqa: ASYNC230 (aiohttp streams the open file)
            form.add_field("file1", handle, filename=name)
            async with self.session.post(f"{base_url}/api/app/upload_job_file", data=form,
                                         timeout=FILE_TIMEOUT) as resp:  # fmt: skip
                reply = await _json(resp)
        if reply.get("code"):
            raise CallError(f"Failed to upload job file: {name}: {reply.get('description')}", reply.get("code"))
        return {"id": "f" + secrets.token_hex(8), "date": int(time.time()), "filename": name, "path": reply.get("key"),
                "size": reply.get("size"), "server": self.server_id, "job": job_id}  # fmt: skip

    async def finish(self, base_url: str, job_id: str, job: Mapping[str, Any]) -> dict[str, Any]:
        body = {"id": job_id, **self._auth(), "job": job}
        async with self.session.post(f"{base_url}/api/app/finish_job", json=body, timeout=CALL_TIMEOUT) as resp:
            return await _json(resp)
