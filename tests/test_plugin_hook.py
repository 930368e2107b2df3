"""`[hook-plugin]`: asks the connected node to fire a web hook, and reports its answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.agentkit import finished, make_runner, output, run_job


@pytest.fixture
async def node() -> AsyncIterator[tuple[str, list[Any]]]:
    calls: list[Any] = []

    async def fire(request: web.Request) -> web.Response:
        body = await request.json()
        calls.append(body)
        if body["web_hook"] == "missing":
            return web.json_response({"code": "web_hook", "description": "Web hook not found"})
        return web.json_response({"code": 0, "description": "Sent", "details": "HTTP 200"})

    app = web.Application()
    app.router.add_post("/api/app/fire_job_web_hook/v1", fire)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", calls  # type: ignore[union-attr]
    await runner.cleanup()


async def test_a_hook_fires_and_a_refusal_fails_the_job(node: tuple[str, list[Any]], tmp_path: Path) -> None:
    base_url, calls = node
    runner, events = make_runner(tmp_path)
    for job_id, hook in (("h1", "wh1"), ("h2", "missing")):
        run = runner.launch({"id": job_id, "server": "s1", "command": "[hook-plugin]",
                             "params": {"web_hook": hook, "text": "hi"}}, {}, {}, base_url)  # fmt: skip
        assert run is not None
        await finished(events, job_id)
    assert calls == [{"job": "h1", "server": "s1", "web_hook": "wh1", "text": "hi"},
                     {"job": "h2", "server": "s1", "web_hook": "missing", "text": "hi"}]  # fmt: skip
    ok, refused = runner.runs["h1"], runner.runs["h2"]
    assert (ok.job["code"], ok.job["description"]) == (0, "Sent") and ok.job["markdown"]["content"] == "HTTP 200"
    assert (refused.job["code"], refused.job["description"]) == ("web_hook", "Web hook not found")
    assert "Web Hook failed: Web hook not found" in output(refused)


async def test_no_node_answering_fails_the_job(tmp_path: Path) -> None:
    runner, events = make_runner(tmp_path)
    run = await run_job(runner, events, {"command": "[hook-plugin]", "params": {"web_hook": "w"}})
    assert run.job["code"] == 1

