"""upload_job_file and GET /files on real nodes (in-process primary and satellite, real valkey): agent auth (job
token, server token, wrong server, finished job), limits and malformed bodies, and who may read a stored file."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from api.app import RUNNER_OPTIONS, create_app
from api.handlers.jobfiles import stored_name
from api.settings import Settings
from cluster.node import NodeRuntime
from storage.connection import Database
from storage.files import RedisFileStore
from storage.stores import Stores
from tests.authkit import Client, NodeTestServer, Site, wait_until

Headers = dict[str, str]
Job = dict[str, Any]
Fields = list[tuple[str, Any]]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def stores(site: Site) -> Stores:
    return site.node.stores


async def launch(site: Site, job_id: str, **fields: Any) -> Job:
    job: Job = {"id": job_id, "state": "active", "type": "adhoc", "event": "e1", "category": "general",
                "targets": ["main"], "server": "s1", "started": time.time(), **fields}  # fmt: skip
    assert await stores(site).jobs.launch(site.node.fence(), job)
    return job


def form(fields: Fields) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields:
        if isinstance(value, tuple):
            filename, content, ctype = value
            data.add_field(name, content, filename=filename, content_type=ctype)
        else:
            data.add_field(name, value)
    return data


async def upload(client: Client, fields: Fields) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/app/upload_job_file/v1", data=form(fields))
    return resp.status, await resp.json()


def job_auth(site: Site, job_id: str) -> Fields:
    return [("id", job_id), ("auth", sha(job_id + stores(site).secret_key))]


def a_file(content: bytes = b"report body\n", name: str = "Report-1.TXT", ctype: str = "text/plain") -> Fields:
    return [("file1", (name, content, ctype))]


@pytest.fixture
async def satellite(site: Site, db: Database, tmp_path: Path) -> AsyncIterator[Client]:
    node = NodeRuntime(db, "n2", "http://127.0.0.1:5532", lease_ms=3000,
                       stores=Stores.open(db, secret_key=stores(site).secret_key))  # fmt: skip
    client = TestClient(NodeTestServer(create_app(Settings(data_dir=tmp_path / "sat"), node), **RUNNER_OPTIONS))
    await client.start_server()
    await node.start()
    try:
        await wait_until(lambda: node.stores.bus.healthy and node.election.primary_id == "n1", "satellite")
        assert not node.is_primary
        yield client
    finally:
        await node.stop()
        await client.close()


async def test_upload_with_each_credential(site: Site, admin: Headers, satellite: Client) -> None:
    job = await launch(site, "jup1")
    secret = stores(site).secret_key
    server_token = sha("s1" + secret)
    credentials: list[Fields] = [
        job_auth(site, job["id"]),  # fields first: streamed straight to the store
        [("server", "s1"), ("id", job["id"]), ("auth", server_token)],
        [("server", "s1"), ("id", job["id"]), ("auth", sha(job["id"] + server_token))],  # a runner's per-job token
    ]
    keys = []
    for fields in credentials:
        status, data = await upload(site.client, fields + a_file())
        assert (status, data["code"], data["size"]) == (200, 0, 12), data
        keys.append(data["key"])
    # File first, fields after: spooled, then checked, then stored.
    status, data = await upload(site.client, [*a_file(b"late fields"), *job_auth(site, job["id"]), ("_name", "a/b")])
    assert (status, data["code"], data["size"]) == (200, 0, 11), data
    keys.append(data["key"])
    # Any node takes uploads (a write that is not the primary's to make).
    status, data = await upload(satellite, job_auth(site, job["id"]) + a_file(b"via satellite"))
    assert (status, data["code"]) == (200, 0), data
    keys.append(data["key"])
    for key in keys:
        prefix, job_dir, random, name = key.rsplit("/", 3)
        assert (prefix, job_dir, name) == ("files/jobs", job["id"], "report-1.txt") and len(random) == 24, key
    assert len(set(keys)) == len(keys)
    resp = await site.client.get("/" + keys[-1], headers=admin)
    assert resp.status == 200 and await resp.read() == b"via satellite"
    resp = await satellite.get("/" + keys[3], headers=admin)
    assert resp.status == 200 and await resp.read() == b"late fields"


async def test_upload_refusals(site: Site, satellite: Client) -> None:
    job = await launch(site, "jup2", server="s1")
    secret = stores(site).secret_key
    refusals: list[tuple[Fields, int, str, str]] = [
        ([("id", job["id"]), ("auth", sha(job["id"] + "wrong"))], 403, "auth", "Authentication failure"),
        ([("id", job["id"]), ("auth", "a" * 64), ("server", "s1")], 403, "auth", "Authentication failure"),
        ([("id", job["id"]), ("auth", "é" * 64)], 403, "auth", "Authentication failure"),
        # A field named like something internal changes nothing.
        ([("id", job["id"]), ("auth", "b" * 64), ("_name", "../x")], 403, "auth", "Authentication failure"),
        # A valid token of another server: not the server this job runs on.
        ([("id", job["id"]), ("auth", sha("s2" + secret)), ("server", "s2")], 403, "auth", "Authentication failure"),
        ([("id", "../../etc"), ("auth", "x")], 400, "api", "'id'"),
        ([("auth", "x")], 400, "api", "id"),
        ([("id", job["id"])], 400, "api", "auth"),
    ]
    for fields, status_want, code, fragment in refusals:
        for client in (site.client, satellite):
            for order in ("fields first", "file first"):
                body = fields + a_file() if order == "fields first" else a_file() + fields
                status, data = await upload(client, body)
                assert (status, data["code"]) == (status_want, code), (fields, order, data)
                assert fragment in data["description"], data
    status, data = await upload(site.client, job_auth(site, job["id"]))
    assert (status, data["code"]) == (400, "api") and "file1" in data["description"], data
    status, data = await upload(site.client, job_auth(site, job["id"]) + a_file() + a_file())
    assert (status, data["code"]) == (400, "api") and "one file" in data["description"], data
    many: Fields = [(f"f{i}", "x") for i in range(20)]
    status, data = await upload(site.client, many + job_auth(site, job["id"]) + a_file())
    assert (status, data["code"]) == (413, "api"), data
    status, data = await upload(site.client, [("id", job["id"]), ("auth", "x" * 5000), *a_file()])
    assert (status, data["code"]) == (400, "api") and "auth" in data["description"], data
    resp = await site.client.post("/api/app/upload_job_file/v1", json={"id": job["id"], "auth": "x"})
    assert resp.status == 415 and (await resp.json())["code"] == "api"
    # A part whose headers are not valid HTTP (a control character in its name) is a malformed body.
    raw = (b'--b0\r\nContent-Disposition: form-data; name="\x1f"\r\n\r\nx\r\n--b0--\r\n')
    resp = await site.client.post("/api/app/upload_job_file/v1", data=raw,
                                  headers={"Content-Type": "multipart/form-data; boundary=b0"})  # fmt: skip
    data = await resp.json()
    assert (resp.status, data["code"]) == (400, "api") and "Malformed form body" in data["description"], data
    # A finished job takes no more files.
    now = time.time()
    await stores(site).jobs.finish(site.node.fence(), {**job, "state": "complete", "code": 0, "completed": now,
                                                       "elapsed": now - job["started"]})  # fmt: skip
    status, data = await upload(site.client, job_auth(site, job["id"]) + a_file())
    assert data["code"] == "job" and "not active" in data["description"], data
    # Unknown job with a right token (the token says nothing about whether the job exists).
    status, data = await upload(site.client, job_auth(site, "jnosuchjob") + a_file())
    assert data["code"] == "job", data
    assert await stores(site).files.delete_prefix("files/jobs/") == 0  # nothing refused was stored


async def test_upload_size_limit(site: Site, tmp_path: Path) -> None:
    job = await launch(site, "jup3")
    files = stores(site).files
    assert isinstance(files, RedisFileStore)
    files.max_file_bytes = 2048
    try:
        for order in ("fields first", "file first"):
            big = a_file(b"x" * 5000)
            body = job_auth(site, job["id"]) + big if order == "fields first" else big + job_auth(site, job["id"])
            status, data = await upload(site.client, body)
            assert (status, data["code"]) == (413, "api") and "2048" in data["description"], (order, data)
        status, data = await upload(site.client, job_auth(site, job["id"]) + a_file(b"y" * 2048))
        assert (status, data["size"]) == (200, 2048), data
    finally:
        files.max_file_bytes = 256 * 1024 * 1024
    assert await files.delete_prefix(f"files/jobs/{job['id']}/") == 1  # only the one that fitted
    spool = site.settings.data_dir / "tmp"
    assert not spool.exists() or list(spool.iterdir()) == []  # spool files never outlive their request


async def limited_user(site: Site, admin: Headers) -> Headers:
    body = {"username": "opsonly", "email": "ops@example.com", "full_name": "Ops", "password": "pw-ops",
            "categories": ["ops"]}  # fmt: skip
    status, data = await site.call("admin_create", body, ns="user", headers=admin)
    assert (status, data["code"]) == (200, 0), data
    sid, _ = await site.login("opsonly", "pw-ops")
    return {"X-Session-ID": sid}


async def test_get_files_access(site: Site, admin: Headers) -> None:
    job = await launch(site, "jfiles1")
    ops_job = await launch(site, "jfiles2", category="ops")
    secret = stores(site).secret_key
    _, data = await upload(site.client, job_auth(site, job["id"]) + a_file(b"general data"))
    key = data["key"]
    _, data = await upload(site.client, job_auth(site, ops_job["id"]) + a_file(b"ops data"))
    ops_key = data["key"]
    _, data = await upload(site.client, job_auth(site, job["id"]) + a_file(b"<script>x</script>", "Page.html",
                                                                          "text/html"))  # fmt: skip
    html_key = data["key"]
    limited = await limited_user(site, admin)
    plain, _ = await site.admin_key(admin["X-Session-ID"], privileges={})

    async def fetch(path: str, headers: Headers | None = None, **query: str) -> tuple[int, bytes, Any]:
        resp = await site.client.get(path, headers=headers or {}, params=query)
        return resp.status, await resp.read(), resp.headers

    status, body, headers = await fetch("/" + key, admin)
    assert (status, body) == (200, b"general data") and headers["Content-Type"].startswith("text/plain")
    assert headers["X-Content-Type-Options"] == "nosniff" and "Content-Disposition" not in headers
    assert (await fetch("/" + key, {"X-API-Key": plain}))[0] == 200  # a key that can see the job's category
    assert (await fetch("/" + key, api_key=plain))[0] == 200
    assert (await fetch("/" + key, limited))[0] == 403
    assert (await fetch("/" + ops_key, limited))[:2] == (200, b"ops data")
    assert (await fetch("/" + key))[0] == 403  # no credentials
    assert (await fetch("/" + key, {"X-API-Key": "x" * 43}))[0] == 401
    # Agents read with their server token.
    assert (await fetch("/" + key, server="s7", auth=sha("s7" + secret)))[:2] == (200, b"general data")
    assert (await fetch("/" + key, server="s7", auth=sha("s8" + secret)))[0] == 403
    assert (await fetch("/" + key, server="s7", auth="é"))[0] == 403
    # Unknown, malformed and hostile paths.
    assert (await fetch("/" + key.replace("report-1.txt", "other.txt"), admin))[0] == 404
    for bad in ("/files/jobs/%2e%2e/%2e%2e/etc/passwd", "/files/jobs/x%00y", "/files/.hidden", "/files/a//b"):
        assert (await fetch(bad, admin))[0] == 404, bad
    # Anything a browser would run is a download, and every file is sandboxed.
    status, body, headers = await fetch("/" + html_key, admin)
    assert status == 200 and headers["Content-Disposition"] == 'attachment; filename="page.html"'
    assert headers["Content-Security-Policy"] == "sandbox"
    _, _, headers = await fetch("/" + key, admin, download="1")
    assert headers["Content-Disposition"] == 'attachment; filename="report-1.txt"'
    resp = await site.client.head("/" + key, headers=admin)
    assert resp.status == 200 and resp.headers["Content-Length"] == "12"


def test_stored_names() -> None:
    cases = {
        "Report 1.TXT": "report_1.txt",
        "../../etc/passwd": "passwd",
        "C:\\temp\\x.log": "x.log",
        ".bashrc": "_bashrc",
        "..": "_",
        "": "file",
        "a/": "file",
        "ünï côdé.csv": "_n_c_d_.csv",
        "x" * 300 + ".tar.gz": "x" * 121 + ".tar.gz",
        "a\x00b": "a_b",
        "name;rm -rf": "name_rm_-rf",
    }
    for name, want in cases.items():
        assert stored_name(name) == want, name
