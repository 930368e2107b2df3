"""A job's web hook action: job_hook_data rendered by run_web_hook into a real request to a receiver on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cluster.actions.result import MAX_DETAILS
from cluster.actions.webhook import job_hook_data, run_web_hook

JOB = {"id": "jhook1", "event": "eship", "category": "cat1", "plugin": "shellplug", "server": "s1", "code": 0,
       "completed": 1_700_000_000.0, "elapsed": 3725, "params": {"TARGET": "prod eu"},
       "cpu": {"count": 4, "total": 100, "max": 40}, "mem": {"count": 2, "total": 3 << 20, "max": 2 << 20}}  # fmt: skip
EVENT = {"id": "eship", "title": "Ship it"}
SERVER = {"id": "s1", "hostname": "web-01.example", "title": "Web One"}
BASE = "http://podium.example:5522"
TOKEN = "tok/en+s3cret"


@dataclass
class Receiver:
    base: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def hook(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path_qs, "headers": dict(request.headers), "body": await request.text()})
        return web.json_response({"ok": True, "echo": request.headers.get("Authorization", "")})

    async def fail(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text="down for now")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{event}", rec.hook)
    app.router.add_post("/fail", rec.fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.base = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


def _hook(url: str, **changes: Any) -> dict[str, Any]:
    body = ('{"text": {{ stringify(text) }}, "content": "{{ content }}", "job": "{{ job.id }}", '
            '"target": "{{ job.params.TARGET }}", "server": "{{ nice_server }}", '
            '"elapsed": "{{ display.elapsed }}", "cpu": "{{ display.cpu }}", "link": "{{ links.job_details }}", '
            '"cond": "{{ action.condition }}"}')  # fmt: skip
    return {"id": "wship", "title": "Ship hook", "enabled": True, "method": "POST", "url": url, "body": body,
            "headers": [{"name": "Content-Type", "value": "application/json"},
                        {"name": "Authorization", "value": "Bearer {{ secrets.TOKEN }}"}],
            "timeout": 10, "retries": 0, **changes}  # fmt: skip


async def test_a_job_hook_renders_and_arrives(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    data = job_hook_data(JOB, EVENT, condition="success", base_url=BASE, server=SERVER, text="  Deploy done.  ",
                         action={"type": "web_hook", "web_hook": "wship"})  # fmt: skip
    outcome = await run_web_hook(_hook(receiver.base + "/hook/{{ event.id }}?who={{ job.params.TARGET }}"), data,
                                 session, secrets={"TOKEN": TOKEN})  # fmt: skip
    assert outcome.code == 0, outcome
    assert outcome.description == "Success (HTTP 200 OK)" and outcome.elapsed_ms > 0
    (seen,) = receiver.seen
    assert seen["path"] == "/hook/eship?who=prod%20eu"  # URL placeholders are encoded
    assert seen["headers"]["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(seen["body"])
    summary = ("Podium: job jhook1 of Ship it succeeded on Web One (web-01.example). "
               f"Details: {BASE}/#Job?id=jhook1 Deploy done.")  # fmt: skip
    assert body == {"text": summary, "content": summary, "job": "jhook1", "target": "prod eu",
                    "server": "Web One (web-01.example)", "elapsed": "1 hour 2 minutes", "cpu": "25% (peak 40%)",
                    "link": f"{BASE}/#Job?id=jhook1", "cond": "success"}  # fmt: skip
    # The secret went out, but what Podium records has it scrubbed (as is and URL-encoded).
    assert TOKEN not in outcome.details and "Bearer (REDACTED)" in outcome.details
    assert "tok%2Fen%2Bs3cret" not in str(outcome.record())
    assert set(outcome.record()) == {"code", "description", "details", "elapsed_ms"}


async def test_failing_and_disabled_hooks(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    data = job_hook_data({**JOB, "code": "boom", "description": "it broke"}, EVENT, condition="error", base_url=BASE)
    assert data["text"] == (f"Podium: job jhook1 of Ship it failed on s1 with code boom (it broke). "
                            f"Details: {BASE}/#Job?id=jhook1")  # fmt: skip
    failed = await run_web_hook(_hook(receiver.base + "/fail"), data, session)
    assert (failed.code, failed.description) == ("webhook", "HTTP 503 Service Unavailable")
    assert "down for now" in failed.details
    disabled = await run_web_hook(_hook(receiver.base + "/hook/x", enabled=False), data, session)
    assert (disabled.code, disabled.description) == ("webhook", "Web Hook is disabled: wship")
    assert receiver.seen == []


async def test_a_huge_answer_is_bounded(session: aiohttp.ClientSession) -> None:
    huge = "x" * (4 * MAX_DETAILS)
    data = job_hook_data(JOB, {"id": "e", "title": huge}, condition="start", base_url=BASE)
    outcome = await run_web_hook(_hook("http://127.0.0.1:9/", body=huge + "{{ event.title }}"), data, session)
    assert outcome.code == "webhook" and len(outcome.details.encode()) <= MAX_DETAILS
    assert len(outcome.description) <= 1024


@pytest.mark.parametrize(("condition", "job", "action", "expected"), [
    ("start", {"completed": None}, {}, "Podium: job j1 of Ship it started on s1. Details: http://b/#Job?id=j1"),
    ("complete", {"completed": 1, "code": 0}, {},
     "Podium: job j1 of Ship it succeeded on s1. Details: http://b/#Job?id=j1"),
    ("warning", {"completed": 1, "code": "warning", "description": "slow"}, {},
     "Podium: job j1 of Ship it failed on s1 with code warning (slow). Details: http://b/#Job?id=j1"),
    ("tag:urgent", {"completed": None}, {},
     "Podium: job j1 of Ship it is running on s1. Details: http://b/#Job?id=j1"),
    ("start", {"completed": None}, {"template": "job_suspended"},
     "Podium: job j1 of Ship it is suspended until someone resumes it. Resume: http://b/#Job?id=j1&resume=1"),
    ("start", {"completed": None}, {"template": "job_limited", "msg": "Output over 10 MB"},
     "Podium: Output over 10 MB. Details: http://b/#Job?id=j1"),
])  # fmt: skip
def test_the_summary_per_condition(condition: str, job: dict[str, Any], action: dict[str, Any], expected: str) -> None:
    data = job_hook_data({"id": "j1", "server": "s1", **job}, EVENT, condition=condition, base_url="http://b/",
                         action=action)  # fmt: skip
    assert data["text"] == data["message"] == expected
    assert data["action"]["condition"] == condition


def test_hook_data_of_a_deleted_event_and_files() -> None:
    job = {"id": "j2", "event": "egone", "event_title": "Old title", "files": [{"path": "files/jobs/j2/out.csv"}]}
    data = job_hook_data(job, None, condition="success", base_url="http://b", secret_key="sk")
    assert data["event"] == {"id": "egone", "title": "Old title"}
    assert data["links"]["job_files"] == "- http://b/files/jobs/j2/out.csv"
    assert data["links"]["job_log"].startswith("http://b/api/app/download_job_log?id=j2&t=")
    assert data["display"]["mem"] == data["display"]["cpu"] == "(Unknown)"
    assert data["display"]["perf"] == "(No metrics provided)"
