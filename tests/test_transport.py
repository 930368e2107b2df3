"""The HTTP edge in-process: routing, parameter assembly, bodies, errors, primary fencing and /health.

Every test runs the real app factory and a real NodeRuntime against the shared Redis-compatible server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.typing import Processor

from api.app import RUNNER_OPTIONS, create_app
from api.errors import MASTER_DESCRIPTION, NO_PRIMARY_DESCRIPTION
from api.settings import DEFAULT_MAX_BODY, Settings
from cluster.node import NodeRuntime
from storage.connection import Database
from storage.lease import LeaseStore
from storage.models import NodeRecord
from storage.nodes import NodeStore
from tests.authkit import NodeTestServer

NODE_URL = "http://127.0.0.1:5522"
OTHER_URL = "http://10.9.9.9:5599"
LEASE_MS = 3000

Client = TestClient[web.Request, web.Application]


@dataclass
class Edge:
    client: Client
    node: NodeRuntime
    settings: Settings

    @property
    def spool(self) -> Path:
        return self.settings.data_dir / "tmp"

    def spooled(self) -> list[Path]:
        """Upload files left in the spool directory."""
        return sorted(self.spool.iterdir()) if self.spool.exists() else []


class MakeEdge(Protocol):
    def __call__(
        self, *, primary: bool = ..., max_body_bytes: int = ..., test_hooks: bool = ...
    ) -> Awaitable[Edge]: ...


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def make_edge(db: Database, tmp_path: Path) -> AsyncIterator[MakeEdge]:
    """Factory: an app + started NodeRuntime + TestClient; every one it makes is stopped at teardown."""
    made: list[Edge] = []

    async def make(*, primary: bool = True, max_body_bytes: int = DEFAULT_MAX_BODY, test_hooks: bool = True) -> Edge:
        settings = Settings(data_dir=tmp_path / "data", test_hooks=test_hooks, max_body_bytes=max_body_bytes)
        node = NodeRuntime(db, "n1", NODE_URL, lease_ms=LEASE_MS)
        edge = Edge(TestClient(NodeTestServer(create_app(settings, node), **RUNNER_OPTIONS)), node, settings)
        made.append(edge)
        await edge.client.start_server()
        await node.start()
        if primary:
            await wait_until(lambda: node.is_primary, "node n1 primary")
        return edge

    yield make
    for edge in made:
        await edge.node.stop()
        await edge.client.close()


@pytest.fixture
async def edge(make_edge: MakeEdge) -> Edge:
    return await make_edge()


async def register_other(db: Database, node_id: str, url: str) -> None:
    """A registry record for another node, alive for the whole test."""
    record = NodeRecord(
        id=node_id, role="primary", epoch=1, url=url, version="0.0.0", started=time.time(),
        pid=1, hostname="elsewhere", load=0.0,
    )  # fmt: skip
    await NodeStore(db, ttl_ms=300_000).heartbeat(record)


@pytest.fixture
async def satellite(db: Database, make_edge: MakeEdge) -> Edge:
    """n1 as a satellite: node "other" holds the lease and is known in the registry."""
    state = await LeaseStore(db).acquire("other", 60_000)
    assert state.acquired
    await register_other(db, "other", OTHER_URL)
    edge = await make_edge(primary=False)
    await wait_until(lambda: edge.node.primary_url == OTHER_URL, "registry view shows the primary")
    assert not edge.node.is_primary
    return edge


async def get_json(client: Client, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with client.get(path, **kwargs) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def post_json(client: Client, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with client.post(path, **kwargs) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


# -- routing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/app/ping", "/api/app/ping/v1", "/api/app/ping/v1/anything/else"])
async def test_ping_paths(edge: Edge, path: str) -> None:
    status, body = await get_json(edge.client, path)
    assert (status, body) == (200, {"code": 0})


async def test_ping_by_post(edge: Edge) -> None:
    assert await post_json(edge.client, "/api/app/ping/v1", json={}) == (200, {"code": 0})


async def test_success_carries_request_id(edge: Edge) -> None:
    async with edge.client.get("/api/app/ping/v1") as first, edge.client.get("/api/app/ping/v1") as second:
        a, b = first.headers.get("X-Request-ID"), second.headers.get("X-Request-ID")
    assert a and b and a != b


async def test_unknown_api_name(edge: Edge) -> None:
    status, body = await get_json(edge.client, "/api/app/no_such_call/v1")
    assert status == 400
    assert body["code"] == "api"
    assert "Unsupported API" in body["description"] and "no_such_call" in body["description"]


async def test_user_namespace_is_separate(edge: Edge) -> None:
    status, body = await get_json(edge.client, "/api/user/ping/v1")
    assert status == 400
    assert body == {"code": "api", "description": "Unsupported API: user/ping"}


@pytest.mark.parametrize("path", ["/api/nothing/here", "/api/app/", "/api/app/not-a-name/v1"])
async def test_unknown_path_under_api(edge: Edge, path: str) -> None:
    status, body = await get_json(edge.client, path)
    assert status == 404
    assert body["code"] == "notfound"
    assert body["description"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_method_not_allowed(edge: Edge, method: str) -> None:
    async with edge.client.request(method, "/api/app/ping/v1", json={}) as resp:
        assert resp.status == 405
        body = await resp.json()
    assert body["code"] == "api"
    assert method in body["description"]


async def test_error_handler(edge: Edge) -> None:
    status, body = await get_json(edge.client, "/api/app/error/v1")
    assert status == 500
    assert body == {"code": "test", "description": "This is a test error message."}


async def test_test_hooks_absent_by_default(make_edge: MakeEdge) -> None:
    edge = await make_edge(test_hooks=False)
    for name in ("test_crash", "test_fenced_write"):
        status, body = await get_json(edge.client, f"/api/app/{name}/v1")
        assert status == 400
        assert body["code"] == "api" and "Unsupported API" in body["description"]


# -- parameters --------------------------------------------------------------------------------------


async def test_echo_get_query(edge: Edge) -> None:
    status, body = await get_json(edge.client, "/api/app/echo/v1", params={"a": "1", "b": "two"})
    assert status == 200 and body["code"] == 0
    assert body["params"] == {"a": "1", "b": "two"}
    assert body["query"] == {"a": "1", "b": "two"}
    assert body["method"] == "GET"


async def test_echo_post_json_merges_with_query_winning(edge: Edge) -> None:
    status, body = await post_json(
        edge.client, "/api/app/echo/v1?a=from-query&q=1", json={"a": "from-body", "n": 5, "deep": {"x": [1]}}
    )
    assert status == 200
    assert body["params"] == {"a": "from-query", "q": "1", "n": 5, "deep": {"x": [1]}}
    assert body["method"] == "POST"


async def test_reserved_keys_never_reach_params(edge: Edge) -> None:
    reserved = {"api_key": "k", "session_id": "s", "csrf_token": "c", "cachebust": "123", "pretty": "0"}
    status, body = await post_json(
        edge.client, "/api/app/echo/v1", params={**reserved, "keep": "q"}, json={**reserved, "other": 1}
    )
    assert status == 200
    assert body["params"] == {"keep": "q", "other": 1}
    assert body["query"] == {"keep": "q"}


async def test_echo_hides_credential_headers(edge: Edge) -> None:
    headers = {
        "Cookie": "session_id=sekrit; theme=dark",
        "X-API-Key": "key-sekrit",
        "X-Session-ID": "sess-sekrit",
        "Authorization": "Bearer sekrit",
        "X-Custom": "visible",
    }
    async with edge.client.get("/api/app/echo/v1", headers=headers) as resp:
        text = await resp.text()
    body = json.loads(text)
    assert body["headers"]["x-custom"] == "visible"
    for name in ("cookie", "x-api-key", "x-session-id", "authorization"):
        assert name not in body["headers"]
    assert body["cookies"] == {"theme": "dark"}
    assert "sekrit" not in text


async def test_pretty_output(edge: Edge) -> None:
    async with edge.client.get("/api/app/echo/v1", params={"pretty": "1", "a": "b"}) as resp:
        pretty = await resp.text()
    async with edge.client.get("/api/app/echo/v1", params={"a": "b"}) as resp:
        compact = await resp.text()
    assert "\n" in pretty and '\n  "code": 0' in pretty
    assert "\n" not in compact
    assert json.loads(pretty)["params"] == json.loads(compact)["params"] == {"a": "b"}


async def test_pretty_error_output(edge: Edge) -> None:
    async with edge.client.get("/api/app/error/v1?pretty=1") as resp:
        assert resp.status == 500
        assert '\n  "code": "test"' in await resp.text()


async def test_echo_bad_sleep_is_api_error(edge: Edge) -> None:
    status, body = await get_json(edge.client, "/api/app/echo/v1", params={"sleep": "soon"})
    assert status == 400
    assert body["code"] == "api" and "sleep" in body["description"]


# -- bodies ------------------------------------------------------------------------------------------


async def test_multipart_text_field_and_file(edge: Edge) -> None:
    payload = b"line one\nline two\n" * 100
    form = aiohttp.FormData()
    form.add_field("title", "hello")
    form.add_field("upload", payload, filename="notes.txt", content_type="text/plain")
    status, body = await post_json(edge.client, "/api/app/echo/v1?title=query-wins", data=form)
    assert status == 200
    assert body["params"] == {"title": "query-wins"}
    upload = body["files"]["upload"]
    assert upload["name"] == "notes.txt"
    assert upload["size"] == len(payload)
    assert upload["type"] == "text/plain"
    assert Path(upload["path"]).parent == edge.spool
    assert edge.spooled() == []


async def test_multipart_text_field_only(edge: Edge) -> None:
    form = aiohttp.FormData()
    form.add_field("title", "hello")
    form.add_field("count", "3")
    form.add_field("empty", "")
    form.add_field("upload", b"x", filename="x.bin", content_type="application/octet-stream")
    status, body = await post_json(edge.client, "/api/app/echo/v1", data=form)
    assert status == 200
    assert body["params"] == {"title": "hello", "count": "3", "empty": ""}
    assert body["files"]["upload"]["size"] == 1


async def test_urlencoded_form(edge: Edge) -> None:
    status, body = await post_json(edge.client, "/api/app/echo/v1", data={"k": "v", "n": "2"})
    assert status == 200
    assert body["params"] == {"k": "v", "n": "2"}
    assert body["files"] == {}


async def test_json_form_field_carries_payload(edge: Edge) -> None:
    form = aiohttp.FormData()
    form.add_field("json", json.dumps({"a": 1, "b": {"c": "d"}, "api_key": "secret"}))
    form.add_field("upload", b"data", filename="d.bin", content_type="application/octet-stream")
    status, body = await post_json(edge.client, "/api/app/echo/v1", data=form)
    assert status == 200
    assert body["params"] == {"a": 1, "b": {"c": "d"}}
    assert body["files"]["upload"]["size"] == 4


@pytest.mark.parametrize(
    ("value", "expect"),
    [("{not json", "Malformed JSON in form field 'json'"), ("[1, 2]", "must hold a JSON object")],
)
async def test_bad_json_form_field(edge: Edge, value: str, expect: str) -> None:
    form = aiohttp.FormData()
    form.add_field("json", value)
    form.add_field("upload", b"spooled before the error?", filename="f.txt", content_type="text/plain")
    status, body = await post_json(edge.client, "/api/app/echo/v1", data=form)
    assert status == 400
    assert body["code"] == "api" and expect in body["description"]
    # A refused request leaves no spooled upload behind.
    assert edge.spooled() == []


async def test_malformed_json_body(edge: Edge) -> None:
    status, body = await post_json(
        edge.client, "/api/app/echo/v1", data=b'{"a": 1,', headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert body["code"] == "api"
    assert "Malformed JSON" in body["description"] and "position" in body["description"]


async def test_non_utf8_json_body(edge: Edge) -> None:
    status, body = await post_json(
        edge.client, "/api/app/echo/v1", data=b'{"a": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert body["code"] == "api" and "UTF-8" in body["description"]


@pytest.mark.parametrize("raw", [b"[1, 2, 3]", b'"text"', b"42", b"null"])
async def test_json_body_must_be_object(edge: Edge, raw: bytes) -> None:
    status, body = await post_json(
        edge.client, "/api/app/echo/v1", data=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert body == {"code": "api", "description": "Request body must be a JSON object."}


async def test_text_content_type_is_parsed_as_json(edge: Edge) -> None:
    status, body = await post_json(
        edge.client, "/api/app/echo/v1", data=b'{"x": 1}', headers={"Content-Type": "text/plain"}
    )
    assert status == 200 and body["params"] == {"x": 1}


async def test_empty_json_body(edge: Edge) -> None:
    status, body = await post_json(
        edge.client, "/api/app/echo/v1?a=1", data=b"  ", headers={"Content-Type": "application/json"}
    )
    assert status == 200 and body["params"] == {"a": "1"}


@pytest.mark.parametrize("ctype", ["application/octet-stream", "image/png"])
async def test_unsupported_content_type(edge: Edge, ctype: str) -> None:
    status, body = await post_json(edge.client, "/api/app/echo/v1", data=b"\x89PNG", headers={"Content-Type": ctype})
    assert status == 415
    assert body["code"] == "api"
    assert ctype in body["description"]


async def test_oversized_json_body(make_edge: MakeEdge) -> None:
    edge = await make_edge(max_body_bytes=2048)
    big = json.dumps({"blob": "x" * 10_240}).encode()
    status, body = await post_json(
        edge.client, "/api/app/echo/v1", data=big, headers={"Content-Type": "application/json"}
    )
    assert status == 413
    assert body["code"] == "api" and "too large" in body["description"]
    # A body under the limit still works on the same app.
    assert (await post_json(edge.client, "/api/app/echo/v1", json={"small": 1}))[0] == 200


async def test_oversized_multipart_body(make_edge: MakeEdge) -> None:
    edge = await make_edge(max_body_bytes=2048)
    form = aiohttp.FormData()
    form.add_field("upload", b"y" * 10_240, filename="big.bin", content_type="application/octet-stream")
    status, body = await post_json(edge.client, "/api/app/echo/v1", data=form)
    assert status == 413
    assert body["code"] == "api"
    assert edge.spooled() == []


# -- crashes -----------------------------------------------------------------------------------------


async def test_crash_is_internal_error_with_request_id(edge: Edge) -> None:
    processors: list[Processor] = [structlog.contextvars.merge_contextvars, structlog.processors.format_exc_info]
    with structlog.testing.capture_logs(processors=processors) as logs:
        async with edge.client.get("/api/app/test_crash/v1") as resp:
            status = resp.status
            rid = resp.headers.get("X-Request-ID", "")
            text = await resp.text()
    assert status == 500
    body = json.loads(text)
    assert body["code"] == "internal"
    assert rid and rid in body["description"]
    assert "Traceback" not in text and "hunter2" not in text and "RuntimeError" not in text

    failures = [e for e in logs if e.get("event") == "handler_failed"]
    assert len(failures) == 1, logs
    entry = failures[0]
    assert entry["request_id"] == rid
    assert entry["api"] == "app/test_crash"
    assert entry["log_level"] == "error"
    assert "Traceback" in entry["exception"] and "hunter2" in entry["exception"]


async def test_crash_does_not_break_the_server(edge: Edge) -> None:
    async with edge.client.get("/api/app/test_crash/v1") as resp:
        assert resp.status == 500
    assert await get_json(edge.client, "/api/app/ping/v1") == (200, {"code": 0})


# -- primary and satellites ----------------------------------------------------------------------------


async def test_health_on_primary(edge: Edge) -> None:
    status, body = await get_json(edge.client, "/health")
    assert status == 200
    assert body["code"] == 0
    assert body["master"] is True
    assert body["role"] == "primary"
    assert body["node"] == "n1" and body["primary_id"] == "n1"
    assert body["primary"] == NODE_URL
    assert body["epoch"] >= 1
    assert body["redis"] is True


async def test_fenced_write_on_primary(edge: Edge, db: Database) -> None:
    status, body = await post_json(edge.client, "/api/app/test_fenced_write/v1", json={"name": "p1", "value": "v1"})
    assert status == 200
    assert body == {"code": 0, "epoch": edge.node.epoch, "node": "n1"}
    assert await db.client.get(db.keys.probe("p1")) == b"v1"


async def test_fenced_write_reads_body_only(edge: Edge, db: Database) -> None:
    # Write handlers take the body only: a name in the query is ignored.
    status, body = await post_json(edge.client, "/api/app/test_fenced_write/v1?name=fromquery", json={})
    assert status == 400
    assert body["code"] == "api" and "'name'" in body["description"]
    assert await db.client.exists(db.keys.probe("fromquery")) == 0


async def test_fenced_write_refused_after_lease_taken(edge: Edge, db: Database) -> None:
    # Another node took the lease behind this one's back: the fence refuses, nothing is written.
    await db.client.set(db.keys.leader, "usurper", px=60_000)
    status, body = await post_json(edge.client, "/api/app/test_fenced_write/v1", json={"name": "late"})
    assert status == 500
    assert body["code"] == "master"
    assert await db.client.exists(db.keys.probe("late")) == 0


async def test_write_on_satellite_names_the_primary(satellite: Edge, db: Database) -> None:
    status, body = await post_json(
        satellite.client, "/api/app/test_fenced_write/v1", json={"name": "sat", "value": "x"}
    )
    assert status == 500
    assert body == {
        "code": "master",
        "host": "10.9.9.9:5599",
        "url": OTHER_URL,
        "description": MASTER_DESCRIPTION,
    }
    assert await db.client.exists(db.keys.probe("sat")) == 0


async def test_reads_work_on_satellite(satellite: Edge) -> None:
    assert await get_json(satellite.client, "/api/app/ping/v1") == (200, {"code": 0})
    status, body = await post_json(satellite.client, "/api/app/echo/v1?a=1", json={"b": 2})
    assert status == 200 and body["params"] == {"a": "1", "b": 2}
    status, body = await get_json(satellite.client, "/api/app/error/v1")
    assert (status, body["code"]) == (500, "test")


async def test_health_on_satellite(satellite: Edge) -> None:
    status, body = await get_json(satellite.client, "/health")
    assert status == 503
    assert body["code"] == "master"
    assert body["master"] is False
    assert body["role"] == "satellite"
    assert body["node"] == "n1"
    assert body["primary_id"] == "other"
    assert body["primary"] == OTHER_URL
    assert body["description"]


async def test_write_with_no_known_primary(db: Database, make_edge: MakeEdge) -> None:
    assert (await LeaseStore(db).acquire("ghost", 60_000)).acquired
    edge = await make_edge(primary=False)
    await wait_until(lambda: edge.node.election.leader_id == "ghost", "lease holder seen")
    status, body = await post_json(edge.client, "/api/app/test_fenced_write/v1", json={"name": "g"})
    assert status == 500
    assert body == {"code": "master", "host": "", "url": "", "description": NO_PRIMARY_DESCRIPTION}
    assert "no primary" in body["description"]
    status, health = await get_json(edge.client, "/health")
    assert status == 503
    assert health["role"] == "satellite" and health["primary"] == ""
    assert health["description"] == "No primary is elected."


async def test_satellite_takes_over_when_lease_released(satellite: Edge, db: Database) -> None:
    # The "other" primary leaves cleanly (compare-and-delete of its lease): n1 is elected and may write.
    holder, epoch = await LeaseStore(db).holder()
    assert holder == "other"
    assert await LeaseStore(db).release("other", epoch)
    await wait_until(lambda: satellite.node.is_primary, "satellite elected")
    status, body = await post_json(satellite.client, "/api/app/test_fenced_write/v1", json={"name": "after"})
    assert status == 200 and body["epoch"] == epoch + 1
    assert await db.client.get(db.keys.probe("after")) == b""
