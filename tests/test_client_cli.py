"""The client commands end to end (`podium run --wait`, call, jobs, job, tail) on real nodes with a real agent
running shell jobs, and satellites started with --redirect-writes answering writes with a 307 to the primary."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from api.app import NODE_HEADER
from podium import Client
from podium.output import ProgressBar
from tests.jobkit import SECRET, Jobs
from tests.servers import Cluster, Node
from tests.test_cli import clean_env, run_cli

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Jobs, Node, Node]]:
    """Two nodes that redirect writes; only the first runs an agent (so jobs run on one known machine)."""
    c = Cluster(tmp_path, size=2, extra=("--secret-key", SECRET, "--redirect-writes"), env={"PODIUM_AGENT": "on"})
    c.nodes[1].env["PODIUM_AGENT"] = "off"
    async with c:
        await c.wait_all_up()
        primary = await c.wait_single_primary()
        jobs = await Jobs.login(c, primary)
        await jobs.wait_servers(primary, 1)
        yield c, jobs, primary, next(n for n in c.nodes if n is not primary)


async def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, env=clean_env(**env))


async def test_run_wait_streams_the_output_and_exits_with_the_jobs_code_and_writes_redirect(
    pair: tuple[Cluster, Jobs, Node, Node], tmp_path: Path
) -> None:
    _, jobs, primary, sat = pair
    key = str((await jobs.ok(primary, "create_api_key", {"title": "cli", "privileges": {"admin": True}}))["plain_key"])
    ok_event = await jobs.event(primary, "#!/bin/sh\necho first line\necho 50%\nsleep 1\necho last line\n")
    bad_event = await jobs.event(primary, "#!/bin/sh\necho failing\nexit 3\n")
    conf = tmp_path / "client.toml"
    conf.write_text(f'url = ["{sat.url}", "{primary.url}"]\napi_key = "{key}"\n')

    # API key and nodes from a config file, the satellite first.
    done = await cli("run", ok_event, "--wait", "--config", str(conf))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.index("first line") < done.stdout.index("last line") and "50%" not in done.stdout
    assert "succeeded" in done.stderr
    job_id = done.stderr.split()[1]

    # A session login from the environment; the job's failure code is the exit code.
    failed = await cli("run", bad_event, "--wait", PODIUM_URL=f"{sat.url},{primary.url}", PODIUM_USERNAME="admin",
                       PODIUM_PASSWORD="admin")  # fmt: skip
    assert failed.returncode == 3, (failed.stdout, failed.stderr)
    assert "failing" in failed.stdout and "failed (3)" in failed.stderr

    urls = ("--url", sat.url, "--url", primary.url)
    got = await cli("call", "get_job", f"id={job_id}", 'remove:=["activity"]', *urls, PODIUM_API_KEY=key)
    assert got.returncode == 0, got.stderr
    reply = json.loads(got.stdout)
    assert reply["code"] == 0 and reply["job"]["id"] == job_id and reply["job"]["code"] == 0
    missing = await cli("call", "get_job", "id=jnosuch", *urls, PODIUM_API_KEY=key)
    assert missing.returncode == 1 and json.loads(missing.stdout)["code"] == "notfound"
    assert missing.stderr.startswith("podium: notfound:")

    listed = await cli("jobs", *urls, PODIUM_API_KEY=key)
    assert listed.returncode == 0 and job_id in listed.stdout and "EVENT" in listed.stdout.splitlines()[0]
    one = await cli("job", job_id, "--json", *urls, PODIUM_API_KEY=key)
    assert json.loads(one.stdout)["code"] == 0
    tail = await cli("tail", job_id, *urls, PODIUM_API_KEY=key)
    assert tail.returncode == 0 and "last line" in tail.stdout
    bad = await cli("call", "ping", "novalue", *urls)
    assert bad.returncode == 2 and "key=value" in bad.stderr
    await redirected_writes(primary, sat)  # on the same pair: a second one would double the start-up time


async def redirected_writes(primary: Node, sat: Node) -> None:
    """A satellite with --redirect-writes answers a write with 307 to the primary; clients that follow it
    (aiohttp as curl -L, the blocking client) reach the primary with the body."""
    url = f"{sat.url}/api/app/test_fenced_write/v1?x=1"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"name": "redir", "value": "v"}, allow_redirects=False) as resp:
            assert resp.status == 307
            assert resp.headers["Location"] == f"{primary.url}/api/app/test_fenced_write/v1?x=1"
        async with http.post(url, json={"name": "redir", "value": "v"}) as resp:  # followed, body and all
            body = await resp.json()
            assert (resp.status, body["code"], body["node"]) == (200, 0, primary.node_id)
            assert resp.headers[NODE_HEADER] == primary.node_id
        async with http.get(f"{sat.url}/api/app/ping/v1") as resp:  # reads stay on the satellite
            assert resp.status == 200 and resp.headers[NODE_HEADER] == sat.node_id
    assert await asyncio.to_thread(_blocking_write, sat.url) == primary.node_id


def _blocking_write(url: str) -> str:
    """The blocking client (its own loop, so off the test's) goes along with the redirect."""
    with Client([url], discover=True) as client:
        return str(client.call("test_fenced_write", {"name": "redir", "value": "w"})["node"])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_only_on_a_terminal() -> None:
    term, plain = _Terminal(), io.StringIO()
    for stream in (term, plain):
        bar = ProgressBar(stream)
        bar.show(0.5, "active")
        bar.clear()
        bar.redraw()
        bar.done()
    assert plain.getvalue() == ""
    assert "[###############...............]  50.0% active" in term.getvalue()
