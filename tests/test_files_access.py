"""GET /files on a real in-process node (real valkey): the owner rules by path (jobs, users, bucket, tickets and
one installed by another module), agents' server tokens, byte ranges, ETag / Last-Modified revalidation, safe
download names; and the range read of both file store backends."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.files import OWNER_RULES, byte_range, owner_rule
from api.principal import Principal
from storage.files import DirectoryFileStore, FileStore, RedisFileStore
from storage.ids import generate_id
from storage.stores import Stores
from tests.authkit import Site, ok

Headers = dict[str, str]
CONTENT = b"0123456789abcdefghij"  # 20 bytes


async def user(site: Site, admin: Headers, name: str, **fields: Any) -> Headers:
    body = {"username": name, "email": f"{name}@example.com", "full_name": name, "password": f"pw-{name}", **fields}
    await ok(site, "admin_create", body, admin, ns="user")
    sid, _ = await site.login(name, f"pw-{name}")
    return {"X-Session-ID": sid}


async def fetch(site: Site, path: str, headers: Headers | None = None, **query: str) -> tuple[int, bytes, Any]:
    resp = await site.client.get("/" + path, headers=headers or {}, params=query)
    return resp.status, await resp.read(), resp.headers


def agent_token(site: Site, server: str) -> str:
    return hashlib.sha256((server + site.node.stores.secret_key).encode()).hexdigest()


@pytest.fixture
def ticket_rule() -> Iterator[None]:
    """Leave the tickets rule as found (a test installs its own)."""
    saved = OWNER_RULES["tickets"]
    yield
    OWNER_RULES["tickets"] = saved


async def test_owner_rules(site: Site, admin: Headers, ticket_rule: None) -> None:
    files = site.node.stores.files
    job: dict[str, Any] = {"id": generate_id("j"), "state": "complete", "code": 0, "event": "ev", "category": "ops",
                           "plugin": "testplug", "server": "s1", "started": time.time() - 2,
                           "completed": time.time()}  # fmt: skip
    assert await site.node.stores.jobs.launch(site.node.fence(), job)
    paths = {"job": f"files/jobs/{job['id']}/r/out.txt", "user": "files/users/admin/r4nd0m/in.txt",
             "bucket": "files/bucket/b1/r/shared.txt", "ticket": "files/tickets/t1/r/spec.txt",
             "other": "files/elsewhere/r/x.txt"}  # fmt: skip
    for path in paths.values():
        await files.put(path, CONTENT)
    alice = await user(site, admin, "alice", privileges={}, categories=["general"])
    ops = await user(site, admin, "opsuser", privileges={}, categories=["ops"])

    async def status(kind: str, headers: Headers | None = None, **query: str) -> int:
        return (await fetch(site, paths[kind], headers, **query))[0]

    for kind in paths:
        assert await status(kind, admin) == 200, kind  # administrators read every file
        assert await status(kind) == 403, kind  # nobody without credentials
        assert await status(kind, server="s9", auth=agent_token(site, "s9")) == 200, kind  # an agent reads any
        assert await status(kind, server="s9", auth=agent_token(site, "s8")) == 403, kind
    assert [await status(k, alice) for k in paths] == [403, 200, 200, 403, 403]
    assert [await status(k, ops) for k in paths] == [200, 200, 200, 403, 403]
    assert (await fetch(site, "files/users/admin/r4nd0m/missing.txt", alice))[0] == 404  # allowed, not stored
    assert (await fetch(site, "files/users/admin", alice))[0] == 403  # no random segment: not an upload
    for bad in ("files/users/%2e%2e/x/y/z", "files/users/a/.x/y", "files/users//b/c"):
        assert (await fetch(site, bad, admin))[0] == 404, bad

    # The tickets module installs its own rule (here: tickets whose id is the caller's name).
    @owner_rule("tickets")
    async def named(stores: Stores, who: Principal, parts: list[str]) -> bool:
        return parts[2] == who.id

    assert OWNER_RULES["tickets"] is named
    await files.put("files/tickets/alice/r/mine.txt", b"ticket file")
    assert (await fetch(site, "files/tickets/alice/r/mine.txt", alice))[:2] == (200, b"ticket file")
    assert (await fetch(site, "files/tickets/alice/r/mine.txt", ops))[0] == 403
    assert await status("ticket", alice) == 403


async def test_ranges_and_revalidation(site: Site, admin: Headers) -> None:
    path = "files/users/admin/r4nd0m/data.txt"
    await site.node.stores.files.put(path, CONTENT)
    status, body, headers = await fetch(site, path, admin)
    assert (status, body, headers["Accept-Ranges"]) == (200, CONTENT, "bytes")
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert etag.startswith('"20-')
    ranges = {"bytes=0-3": (b"0123", "bytes 0-3/20"), "bytes=15-": (b"fghij", "bytes 15-19/20"),
              "bytes=-3": (b"hij", "bytes 17-19/20"), "bytes=18-100": (b"ij", "bytes 18-19/20"),
              "bytes=-50": (CONTENT, "bytes 0-19/20"), "bytes=5-5": (b"5", "bytes 5-5/20")}  # fmt: skip
    for header, (want, content_range) in ranges.items():
        resp = await site.client.get("/" + path, headers={**admin, "Range": header})
        assert (resp.status, await resp.read(), resp.headers["Content-Range"]) == (206, want, content_range), header
        assert resp.headers["Content-Length"] == str(len(want))
    for header in ("bytes=20-", "bytes=5-2", "bytes=-0", "bytes=x-y", "bytes=0-1,4-5", "items=0-1", "bytes=-"):
        resp = await site.client.get("/" + path, headers={**admin, "Range": header})
        assert (resp.status, resp.headers.get("Content-Range")) == (416, "bytes */20"), header
    resp = await site.client.head("/" + path, headers={**admin, "Range": "bytes=2-5"})
    assert (resp.status, resp.headers["Content-Length"], await resp.read()) == (206, "4", b"")
    # Revalidation: the same ETag or a date not before the file's is 304, anything else the file.
    for extra in ({"If-None-Match": etag}, {"If-None-Match": f'"x", W/{etag}'}, {"If-None-Match": "*"},
                  {"If-Modified-Since": modified}):  # fmt: skip
        resp = await site.client.get("/" + path, headers={**admin, **extra})
        assert (resp.status, await resp.read(), resp.headers["ETag"]) == (304, b"", etag), extra
    stale: list[Headers] = [{"If-None-Match": '"20-1"'}, {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
                            {"If-Modified-Since": "not a date"},
                            {"If-None-Match": '"20-1"', "If-Modified-Since": modified}]  # fmt: skip
    for extra in stale:
        resp = await site.client.get("/" + path, headers={**admin, **extra})
        assert (resp.status, await resp.read()) == (200, CONTENT), extra
    await site.node.stores.files.put(path, CONTENT + b"!")  # a new version: the old ETag no longer matches
    resp = await site.client.get("/" + path, headers={**admin, "If-None-Match": etag})
    assert (resp.status, await resp.read()) == (200, CONTENT + b"!")


async def test_download_names_cannot_inject_headers(site: Site, admin: Headers) -> None:
    path = "files/users/admin/r4nd0m/report.csv"
    await site.node.stores.files.put(path, b"a,b\n")
    names = {"1": "report.csv", "true": "report.csv", 'evil"\r\nX-Injected: yes': "evil_X-Injected_yes",
             "../../x.sh": "x.sh", "..\\a\\b.txt": "b.txt", "...": "report.csv", "résumé.csv": "r_sum_.csv",
             "x" * 300: "x" * 128}  # fmt: skip
    for asked, want in names.items():
        status, _, headers = await fetch(site, path, admin, download=asked)
        assert status == 200 and "X-Injected" not in headers, asked
        assert headers["Content-Disposition"] == f'attachment; filename="{want}"', asked


def test_byte_range() -> None:
    assert byte_range("bytes=0-0", 1) == (0, 1)
    assert byte_range(" bytes=3-", 10) == (3, 10)
    for bad in ("bytes=0-0", "bytes=1-"):
        with pytest.raises(ValueError):
            byte_range(bad, 0)


@pytest.fixture(params=["redis", "directory"])
def store(request: pytest.FixtureRequest, site: Site, tmp_path: Path) -> FileStore:
    if request.param == "directory":
        return DirectoryFileStore(tmp_path / "files")
    return RedisFileStore(site.node.stores.db)


async def test_range_reads(store: FileStore) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    await store.put("files/r/data.bin", data)

    async def read(chunk: int, start: int = 0, end: int | None = None) -> tuple[bytes, int]:
        pieces = [p async for p in store.read("files/r/data.bin", chunk, start=start, end=end)]
        assert all(len(p) <= chunk for p in pieces)
        return b"".join(pieces), len(pieces)

    assert await read(1024) == (data, 10)
    assert await read(1000, 10, 2010) == (data[10:2010], 2)
    assert await read(4096, 100) == (data[100:], 3)
    assert await read(4096, 10_000, 20_000) == (data[10_000:], 1)
    assert await read(4096, 5, 5) == (b"", 0)
    assert await read(4096, 20_000) == (b"", 0)
    assert [p async for p in store.read("files/r/none.bin", 10, start=3, end=8)] == []
