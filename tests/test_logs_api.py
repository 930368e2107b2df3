"""The job log endpoints on a real node (in-process aiohttp server, real valkey): tail_live_job_log, view and
download by token, get_job_log, stream_job (SSE: updates, resumable log events, the end) and GET /logs/...

Jobs are seeded as live records through the fenced launch and finished through the fenced finish, as the
dispatcher does; output is appended with LogStore directly, as the agent gateway does.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import ClientResponse

from cluster.actions.hookdata import download_token
from storage.stores import Stores
from tests.authkit import Site, ok

Headers = dict[str, str]
Job = dict[str, Any]
BIG = 1 << 30


async def launch(site: Site, job_id: str, **fields: Any) -> Job:
    job: Job = {"id": job_id, "state": "active", "type": "adhoc", "event": "e1", "category": "general",
                "plugin": "shellplug", "targets": ["main"], "server": "s1", "started": time.time(),
                "progress": 0.0, **fields}  # fmt: skip
    assert await stores(site).jobs.launch(site.node.fence(), job)
    return job


async def finish(site: Site, job: Job, **fields: Any) -> Job:
    now = time.time()
    final = {**job, "state": "complete", "code": 0, "description": "", "completed": now,
             "elapsed": now - job["started"], **fields}  # fmt: skip
    await stores(site).jobs.finish(site.node.fence(), final)
    return final


def stores(site: Site) -> Stores:
    return site.node.stores


async def token(site: Site, job_id: str, headers: Headers) -> str:
    return str((await ok(site, "get_job", {"id": job_id}, headers))["token"])


async def get(site: Site, api: str, headers: Headers | None = None, **query: Any) -> ClientResponse:
    return await site.client.get(f"/api/app/{api}/v1", params={k: str(v) for k, v in query.items()},
                                 headers=headers or {})  # fmt: skip


async def limited_user(site: Site, admin: Headers) -> Headers:
    body = {"username": "opsonly", "email": "ops@example.com", "full_name": "Ops", "password": "pw-ops",
            "categories": ["ops"]}  # fmt: skip
    status, data = await site.call("admin_create", body, ns="user", headers=admin)
    assert (status, data["code"]) == (200, 0), data
    sid, _ = await site.login("opsonly", "pw-ops")
    return {"X-Session-ID": sid}


# -- tail -----------------------------------------------------------------------------------------------------


async def test_tail_live_job_log(site: Site, admin: Headers) -> None:
    job = await launch(site, "jtail1")
    lines = "".join(f"line {i:03d}\n" for i in range(100))  # 9 bytes a line
    await stores(site).logs.append(job["id"], lines, 0, BIG)

    async def tail(**query: Any) -> dict[str, Any]:
        return await ok(site, "tail_live_job_log", {"id": job["id"], **query}, admin)

    assert (await tail())["text"] == lines  # all of it fits: nothing dropped
    assert (await tail(bytes=40))["text"] == "line 096\nline 097\nline 098\nline 099\n"  # partial first line dropped
    assert (await tail(bytes=len(lines)))["text"] == lines
    assert (await tail(bytes=5))["text"] == ""
    status, data = await site.call("tail_live_job_log", {"id": job["id"], "bytes": 0}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "bytes" in data["description"], data
    status, data = await site.call("tail_live_job_log", {"id": job["id"], "bytes": 1048577}, headers=admin)
    assert (status, data["code"]) == (400, "api"), data
    assert (await ok(site, "tail_live_job_log", {"id": "jnosuchjob"}, admin))["text"] == ""
    # Another category's job: not found for a limited user.
    limited = await limited_user(site, admin)
    status, data = await site.call("tail_live_job_log", {"id": job["id"]}, headers=limited)
    assert (status, data["code"]) == (404, "notfound"), data
    # Not active any more: "" (as xyOps).
    await finish(site, job)
    assert (await tail())["text"] == ""


# -- view / download / get_job_log ----------------------------------------------------------------------------


async def test_view_and_download_live_then_stored(site: Site, admin: Headers) -> None:
    job = await launch(site, "jview1")
    t = await token(site, job["id"], admin)
    resp = await get(site, "view_job_log", id=job["id"], t=t)
    assert resp.status == 404 and "No log" in await resp.text()  # nothing written yet
    text = "héllo ✓\n" + "".join(f"{i:06d} output\n" for i in range(300_000))  # about 4 MB: many chunks
    await stores(site).logs.append(job["id"], text, 0, BIG)

    resp = await get(site, "view_job_log", id=job["id"], t=t)
    assert resp.status == 200 and resp.content_type == "text/plain" and await resp.text() == text
    assert "Content-Disposition" not in resp.headers
    resp = await get(site, "download_job_log", id=job["id"], t=t)
    assert resp.headers["Content-Disposition"] == f"attachment; filename=Podium-Job-Log-{job['id']}.txt"
    assert await resp.text() == text
    for bad in ("wrong", t[:-1] + ("A" if t[-1] != "A" else "B"), "é" * 22):
        resp = await get(site, "view_job_log", id=job["id"], t=bad)
        assert resp.status == 403 and "Authentication failed" in await resp.text()
    resp = await get(site, "download_job_log", id=job["id"], t="x")
    assert resp.status == 403
    # get_job_log serves stored logs only: none yet.
    resp = await get(site, "get_job_log", admin, id=job["id"])
    assert resp.status == 204

    await finish(site, job)
    resp = await get(site, "view_job_log", id=job["id"], t=t)  # finished, log not moved yet: still the live one
    assert await resp.text() == text
    assert await stores(site).logs.finalize(job["id"]) == (f"logs/jobs/{job['id']}/log.txt.gz", len(text.encode()))
    resp = await get(site, "view_job_log", id=job["id"], t=t)
    assert resp.status == 200 and await resp.text() == text  # decompressed from the file store
    resp = await get(site, "download_job_log", id=job["id"], t=t)
    assert "attachment" in resp.headers["Content-Disposition"] and await resp.text() == text

    resp = await site.client.get("/api/app/get_job_log/v1", params={"id": job["id"]}, headers=admin,
                                 auto_decompress=False)  # fmt: skip
    assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await resp.read()).decode() == text
    limited = await limited_user(site, admin)
    resp = await get(site, "get_job_log", limited, id=job["id"])
    assert resp.status == 404
    resp = await get(site, "get_job_log", id=job["id"])
    assert resp.status == 401


async def test_log_endpoints_for_unknown_and_silent_jobs(site: Site, admin: Headers) -> None:
    t = download_token("jghost", stores(site).secret_key)
    resp = await get(site, "view_job_log", id="jghost", t=t)
    assert resp.status == 404 and "not found" in (await resp.text()).lower()
    resp = await get(site, "get_job_log", admin, id="jghost")
    assert resp.status == 404
    job = await finish(site, await launch(site, "jsilent"))
    assert await stores(site).logs.finalize(job["id"]) is None
    resp = await get(site, "get_job_log", admin, id=job["id"])
    assert resp.status == 204
    resp = await get(site, "view_job_log", id=job["id"], t=download_token(job["id"], stores(site).secret_key))
    assert resp.status == 404
    status, data = await site.call("view_job_log", method="GET", query={"id": "../etc", "t": "x"})
    assert (status, data["code"]) == (400, "api"), data


# -- stream_job -----------------------------------------------------------------------------------------------


async def events(resp: ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Parse Server-Sent Events: yields {event, id, data}."""
    current: dict[str, Any] = {}
    while True:
        line = (await resp.content.readline()).decode()
        if not line:
            return
        line = line.rstrip("\n")
        if not line:
            if current:
                yield current
            current = {}
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("id: "):
            current["id"] = line[4:]
        elif line.startswith("data: "):
            current["data"] = orjson.loads(line[6:])


async def collect_until(stream: AsyncIterator[dict[str, Any]], want: str, log: list[str]) -> list[dict[str, Any]]:
    """Events until the joined `log` text holds `want` (log events are added to `log`)."""
    seen = []
    while want not in "".join(log):
        ev = await anext(stream)
        seen.append(ev)
        if ev["event"] == "log":
            log.append(ev["data"]["text"])
    return seen


async def test_stream_job_live_to_end(site: Site, admin: Headers) -> None:
    job = await launch(site, "jstream1", cpu={"current": 5}, server="s9")
    logs = stores(site).logs
    first = "starting ✓\n"
    await logs.append(job["id"], first, 0, BIG)
    resp = await get(site, "stream_job", admin, id=job["id"])
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    stream = events(resp)
    assert await anext(stream) == {"event": "start", "data": {}}
    text: list[str] = []
    seen = await collect_until(stream, first, text)
    offset = len(first.encode())
    # Output arriving while the client watches is sent as it comes; multibyte text survives frame cuts.
    second = "€" * 30_000 + "\nß\n"  # 90 KB: more than one frame
    await logs.append(job["id"], second, offset, BIG)
    seen += await collect_until(stream, "ß\n", text)
    assert "".join(text) == first + second
    updates = [ev["data"] for ev in seen if ev["event"] == "update"]
    while not updates:
        ev = await anext(stream)
        if ev["event"] == "update":
            updates.append(ev["data"])
    assert updates[0]["id"] == job["id"] and updates[0]["state"] == "active" and updates[0]["server"] == "s9"
    assert updates[0]["cpu"] == {"current": 5} and updates[0]["progress"] == 0
    log_ids = [int(ev["id"]) for ev in seen if ev["event"] == "log"]
    assert log_ids == sorted(log_ids) and log_ids[-1] == len((first + second).encode())

    # The job finishes: the last output (moved to the file store already), a final update, then the end.
    last = "done\n"
    await logs.append(job["id"], last, len((first + second).encode()), BIG)
    await finish(site, job, code="warning", description="careful", data={"k": 1})
    await logs.finalize(job["id"])
    rest = [ev async for ev in stream]
    text += [ev["data"]["text"] for ev in rest if ev["event"] == "log"]
    assert "".join(text) == first + second + last
    assert rest[-1] == {"event": "end", "data": {}}
    final = rest[-2]["data"]
    assert rest[-2]["event"] == "update" and final["code"] == "warning" and final["description"] == "careful"
    assert final["data"] == {"k": 1} and final["id"] == job["id"] and final["elapsed"] >= 0


async def test_stream_job_resumes_from_an_offset(site: Site, admin: Headers) -> None:
    job = await launch(site, "jstream2")
    output = "".join(f"line {i}\n" for i in range(1000))
    await stores(site).logs.append(job["id"], output, 0, BIG)
    await finish(site, job)
    for stored in (False, True):  # from the live log (not moved yet), then from the file store
        if stored:
            await stores(site).logs.finalize(job["id"])
        for start in (0, 7, 4000, len(output)):
            for how in ("param", "header"):
                query = {"id": job["id"], **({"offset": start} if how == "param" else {})}
                headers = {**admin, **({"Last-Event-ID": str(start)} if how == "header" else {})}
                resp = await get(site, "stream_job", headers, **query)
                got = [ev async for ev in events(resp)]
                assert got[0]["event"] == "start" and got[-1]["event"] == "end"
                logs = [ev for ev in got if ev["event"] == "log"]
                assert "".join(ev["data"]["text"] for ev in logs) == output[start:], (stored, start, how)
                if logs:
                    assert logs[0]["data"]["offset"] == start and int(logs[-1]["id"]) == len(output)
                assert [ev["event"] for ev in got if ev["event"] != "log"] == ["start", "update", "end"]
    # Unknown or invisible jobs are refused before any stream starts.
    resp = await get(site, "stream_job", admin, id="jnosuch")
    assert resp.status == 404
    limited = await limited_user(site, admin)
    resp = await get(site, "stream_job", limited, id=job["id"])
    assert resp.status == 404
    for headers in ({}, {"X-API-Key": "x" * 43}):
        resp = await get(site, "stream_job", headers, id=job["id"])
        assert resp.status == 401 and (await resp.json())["code"] == "session"
    # A magic link's stream token stands in for a session.
    stream_token = hashlib.sha256(("stream" + job["id"] + stores(site).secret_key).encode()).hexdigest()
    resp = await get(site, "stream_job", id=job["id"], token=stream_token)
    got = [ev async for ev in events(resp)]
    assert "".join(ev["data"]["text"] for ev in got if ev["event"] == "log") == output and got[-1]["event"] == "end"
    resp = await get(site, "stream_job", id=job["id"], token="0" * 64)
    assert resp.status == 400 and "Authentication failed" in (await resp.json())["description"]


async def test_stored_log_under_logs_path(site: Site, admin: Headers) -> None:
    job = await launch(site, "jlogpath")
    await stores(site).logs.append(job["id"], "some output\n", 0, BIG)
    await finish(site, job)
    path, _ = await stores(site).logs.finalize(job["id"]) or ("", 0)
    resp = await site.client.get("/" + path, headers=admin, auto_decompress=False)
    assert resp.status == 200 and gzip.decompress(await resp.read()) == b"some output\n"
    limited = await limited_user(site, admin)
    resp = await site.client.get("/" + path, headers=limited)
    assert resp.status == 403
    resp = await site.client.get("/" + path)
    assert resp.status == 403
