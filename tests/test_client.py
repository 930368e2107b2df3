"""The client library (podium/) against real nodes: reads spread over every node, writes reach the primary from
any node, a primary killed with calls in flight, session and API key auth."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from api.registry import HANDLERS
from podium import AsyncClient, BadRequest, ConnectionFailed, NotFound, PodiumError, config
from podium.calls import READS, WRITES
from tests.servers import ROOT, Cluster, free_port

pytestmark = pytest.mark.timeout(120)


def test_the_write_and_read_sets_are_the_registrys() -> None:
    assert {f"{h.ns}/{h.name}" for h in HANDLERS if h.write and not h.anywhere} == WRITES
    assert {f"{h.ns}/{h.name}" for h in HANDLERS if not h.write} == READS


async def test_credentials_go_only_to_configured_nodes() -> None:
    """A node's `master` reply, its /health and a 307 may name any URL: the client follows only the nodes it was
    given, so the API key never reaches another host; a cut-off call not known as a read is not repeated."""
    seen: list[tuple[str, str]] = []

    async def foreign(request: web.Request) -> web.Response:
        seen.append(("foreign", request.headers.get("X-API-Key", "")))
        return web.json_response({"code": 0})

    stranger = TestServer(web.Application())
    stranger.app.router.add_route("*", "/{tail:.*}", foreign)
    await stranger.start_server()
    elsewhere = str(stranger.make_url("")).rstrip("/")
    calls: list[str] = []

    async def node(request: web.Request) -> web.StreamResponse:
        if request.path == "/health":
            return web.json_response({"node": "n1", "master": False, "primary": elsewhere}, status=503)
        name = request.path.split("/")[3]
        calls.append(name)
        if name == "redirected":
            raise web.HTTPTemporaryRedirect(f"{elsewhere}{request.path}")
        if name == "cut_off":
            request.transport.close() if request.transport else None
            await asyncio.sleep(1)
        return web.json_response({"code": "master", "description": "not here", "host": "x", "url": elsewhere},
                                 status=500)  # fmt: skip

    mine = TestServer(web.Application())
    mine.app.router.add_route("*", "/{tail:.*}", node)
    await mine.start_server()
    try:
        async with AsyncClient(str(mine.make_url("")), api_key="SECRET", failover_s=0.5) as client:
            for name in ("update_event", "get_events", "redirected"):
                with pytest.raises(PodiumError) as err:
                    await client.call(name)
                assert err.value.code in ("master", "connection"), err.value
            with pytest.raises(ConnectionFailed, match="may or may not have run"):
                await client.call("cut_off")  # unknown: maybe a write, so never sent twice
        assert seen == [] and calls.count("cut_off") == 1
    finally:
        await mine.close()
        await stranger.close()


def test_the_client_imports_no_server_package() -> None:
    code = "import json, sys, podium, podium.cli; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not {"api", "cluster", "storage"} & set(json.loads(out))


async def test_reads_spread_writes_reach_the_primary_and_a_kill_is_survived(cluster: Cluster) -> None:
    primary = await cluster.wait_single_primary()
    satellites = [n for n in cluster.nodes if n is not primary]
    ids = {n.node_id for n in cluster.nodes}
    async with AsyncClient([n.url for n in cluster.nodes]) as client:
        seen = set()
        for _ in range(9):
            await client.call("ping")
            seen.add(client.last_node)
        assert seen == ids  # round robin: every node answered reads

    # A write the client does not know as one (a test hook) goes to a satellite first and follows `master`.
    async with AsyncClient(",".join(n.url for n in satellites) + "," + primary.url) as client:
        reply = await client.call("test_fenced_write", {"name": "via_sat", "value": "1"})
        assert reply["node"] == primary.node_id and client.primary == primary.url
        with pytest.raises(BadRequest) as bad:
            await client.call("test_fenced_write", {"name": "not a word"})
        assert bad.value.code == "api" and "name" in bad.value.message

    # Session auth through satellites only (`discover`: the primary they name may be followed): the login and the
    # known writes find the primary from /health.
    async with AsyncClient([s.url for s in satellites], username="admin", password="admin", discover=True) as client:
        await cluster.wait_for(lambda: _logs_in(client), timeout=30, interval=0.2)
        reply = await client.call("create_category", {"id": "viaclient", "title": "Via client"})
        assert client.last_node == primary.node_id and client.primary == primary.url
        category = await client.call("get_category", {"id": "viaclient"})
        assert category["category"]["title"] == "Via client"
        with pytest.raises(NotFound):
            await client.call("get_category", {"id": "nosuch"})
        key = (await client.call("create_api_key", {"title": "client", "privileges": {"admin": True}}))["plain_key"]

    # kill -9 of the primary with reads and writes in a loop: none fails, writes land on the new primary.
    async with AsyncClient([n.url for n in cluster.nodes], api_key=key) as client:
        await client.call("get_categories")
        old = primary.node_id
        writers: list[str] = []
        for i in range(400):
            if i == 20:
                primary.kill9()
            await client.call("get_categories")
            writers.append((await client.call("test_fenced_write", {"name": "loop", "value": str(i)},
                                              retry=True))["node"])  # fmt: skip
            if i > 20 and writers[-1] != old and len(writers) - writers.index(writers[-1]) > 20:
                break
        assert writers[0] == old and writers[-1] != old and writers[-1] in ids
        assert client.primary is not None and client.primary != primary.url


async def _logs_in(client: AsyncClient) -> bool:
    """True once the first start has created the admin (a fresh cluster may still be making it)."""
    try:
        await client.call("get_categories")
    except Exception:
        return False
    return True


async def test_no_node_answers_is_a_connection_error() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", failover_s=0.5) as client:
        with pytest.raises(ConnectionFailed) as err:
            await client.call("ping")
        assert err.value.code == "connection"
    with pytest.raises(ValueError, match="http"):
        AsyncClient("node1:5522")


def test_settings_come_from_flags_then_the_environment_then_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "client.toml"
    conf.write_text('url = "http://file:1,http://file:2/"\napi_key = "filekey"\nusername = "ann"\n')
    env = {"PODIUM_CONFIG": str(conf)}
    from_file = config.load(None, None, None, env)
    assert from_file.urls == ["http://file:1", "http://file:2"] and from_file.api_key == "filekey"
    assert "filekey" not in repr(from_file)
    from_env = config.load(None, None, None, {**env, "PODIUM_URL": "http://env:1", "PODIUM_API_KEY": "envkey"})
    assert (from_env.urls, from_env.api_key, from_env.username) == (["http://env:1"], "envkey", "ann")
    flags = config.load(["http://a:1,http://b:1", "http://c:1"], "flagkey", None, {**env, "PODIUM_URL": "http://x:1"})
    assert (flags.urls, flags.api_key) == (["http://a:1", "http://b:1", "http://c:1"], "flagkey")
    assert config.load(None, None, None, {"HOME": str(tmp_path)}).urls == [config.DEFAULT_URL]

    conf.write_text("url = 5\n")
    with pytest.raises(config.ConfigError, match="'url' must be a string"):
        config.load(None, None, None, env)
    conf.write_text('api_kye = "x"\n')
    with pytest.raises(config.ConfigError, match="unknown key 'api_kye'"):
        config.load(None, None, None, env)
    with pytest.raises(config.ConfigError, match="PODIUM_URL: node URL 'env:1'"):
        config.load(None, None, None, {"PODIUM_URL": "env:1", "HOME": str(tmp_path)})
    with pytest.raises(config.ConfigError, match="no such file"):
        config.load(None, None, str(tmp_path / "missing.toml"), {})
