"""`[http-plugin]` against an aiohttp server on 127.0.0.1: status, matches, headers, body, download, secrets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.agentkit import finished, make_runner, output, run_job, size_of


@pytest.fixture
async def site() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        body = await request.text()
        return web.json_response({"method": request.method, "body": body, "agent": request.headers.get("X-Who")})

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/echo")

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x01" * 1000, content_type="application/octet-stream",
                            headers={"Content-Disposition": 'attachment; filename="data.bin"'})  # fmt: skip

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/fail", fail)
    app.router.add_get("/moved", moved)
    app.router.add_get("/blob", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def http(**params: Any) -> dict[str, Any]:
    return {"command": "[http-plugin]", "params": {"method": "GET", "timeout": "10", **params}}


async def test_a_post_with_headers_and_a_json_reply(site: str, tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    job = http(method="POST", url=site + "/echo?job={{id}}", headers="X-Who: agent-{{id}}\n", data="hello",
               success_match="hello")  # fmt: skip
    run = await run_job(runner, events, job)
    assert (run.job["code"], run.job["description"]) == (0, "Success (HTTP 200 OK)")
    data = run.output.held["data"]
    assert data["statusCode"] == 200 and data["json"] == {"method": "POST", "body": "hello", "agent": "agent-j1"}
    assert "Sending HTTP POST to URL" in output(run)
    assert "### Response Body" in run.job["markdown"]["content"]


async def test_an_error_status_and_the_match_rules(site: str, tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, http(url=site + "/fail"))
    assert (run.job["code"], run.job["description"]) == (503, "HTTP 503 Service Unavailable")
    run = await run_job(runner, events, {"id": "j2", **http(url=site + "/echo", error_match="GET")})
    assert run.job["code"] == 1 and run.job["description"] == "Response contains error match: GET"
    run = await run_job(runner, events, {"id": "j3", **http(url=site + "/echo", success_match="nope")})
    assert run.job["description"] == "Response missing success match: nope"
    run = await run_job(runner, events, {"id": "j4", **http(url="ftp://x")})
    assert run.job["description"] == "Malformed URL: ftp://x"


async def test_redirects_only_when_asked(site: str, tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, http(url=site + "/moved"))
    assert run.job["code"] == 0 and run.output.held["data"]["statusCode"] == 302
    run = await run_job(runner, events, {"id": "j2", **http(url=site + "/moved", follow=True)})
    assert run.output.held["data"]["json"]["method"] == "GET"


async def test_download_becomes_a_job_file(site: str, tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, http(url=site + "/blob", download=True))
    assert run.job["code"] == 0
    [file] = run.job["files"]
    assert file["filename"] == "data.bin" and size_of(file["path"]) == 2000


async def test_secrets_are_redacted_from_the_log(site: str, tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = runner.launch({"id": "s", "now": 1, **http(url=site + "/echo?key=hunter2")}, {}, {"KEY": "hunter2"}, "")
    assert run is not None

    await finished(events, "s")
    assert "hunter2" not in output(run) and "(REDACTED)" in output(run)
    assert "hunter2" not in run.job["markdown"]["content"]


async def test_a_connection_error_fails_the_job(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, http(url="http://127.0.0.1:9/none", connect_timeout="2"))
    assert run.job["code"] == 1 and run.job["description"].startswith("Error:")
