"""User uploads on a real in-process node (real valkey): the multipart receiver (api/uploads.py) through a test
handler and the endpoints (upload_files, upload_job_input_files), its limits, hostile names, refusals that leave
nothing behind, run_event's check of `input.files`, delete_job_file and the delete cascade; and a job on a real
agent that downloads its uploaded input file."""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from api.app import RUNNER_OPTIONS, create_app
from api.bootstrap import first_start
from api.call import Call
from api.errors import ApiError
from api.registry import AUTH, Registry, Reply
from api.server import job_services
from api.settings import Settings
from api.typedefs import REGISTRY
from api.uploads import Fields, MiB, UploadLimits, display_name, receive_upload, url_name, valid_name
from cluster.node import NodeRuntime
from storage.connection import Database
from storage.files import RedisFileStore
from storage.ids import generate_id
from storage.stores import Stores, job_input_uploads
from tests.authkit import Client, NodeTestServer, Site, ok, wait_until
from tests.jobkit import SECRET, Jobs
from tests.servers import Cluster
from tests.test_agent_link import Site as NodeSite
from tests.test_agent_link import agent, config_for

Headers = dict[str, str]
Part = tuple[str, str | None, bytes]  # field name, file name (None: a plain field), content

LOCAL = Registry()


@LOCAL.add("test_receive", write=True, privilege=AUTH, own_body=True, args=())
async def receive(call: Call) -> Reply:
    """receive_upload as a handler: `?by=fields` takes the prefix from the `box` field (async, may refuse),
    `?files=N` lowers the count limit, `?owner=1` adds a `job` key to every File."""
    limits = UploadLimits.of(call)
    if call.query.get("files"):
        limits = limits.lowered(files=int(call.query["files"]))

    async def from_fields(fields: Fields) -> str:
        box = str(fields.get("box") or "")
        if not box.isalnum():
            raise ApiError("api", "Parameter 'box' is required.")
        return f"files/bucket/{box}"

    prefix = from_fields if call.query.get("by") == "fields" else f"files/users/{call.who.username}"
    owner = {"job": "jx"} if call.query.get("owner") else None
    fields, files = await receive_upload(call, prefix=prefix, limits=limits, owner=owner)
    return {"fields": fields, "files": files}


@pytest.fixture
async def upsite(db: Database, tmp_path: Path) -> AsyncIterator[Site]:
    """tests/authkit.open_site with small upload limits and the test handler above."""
    config = Settings(data_dir=tmp_path / "data", login_ip_limit=0, upload_max_file_mb=1, upload_max_request_mb=2,
                      upload_max_files=4, max_json_bytes=64 * 1024)  # fmt: skip
    stores = Stores.open(db, secret_key="test-secret-" + db.keys.cluster)
    node = NodeRuntime(db, "n1", "http://127.0.0.1:5522", lease_ms=3000, services=[first_start], stores=stores)
    node.services += job_services(node, config)
    app = create_app(config, node)
    app[REGISTRY] = app[REGISTRY].merged(LOCAL)
    site = Site(TestClient(NodeTestServer(app, **RUNNER_OPTIONS)), node, config)
    await site.client.start_server()
    await node.start()
    try:
        await wait_until(lambda: node.is_primary, "primary")
        deadline = time.monotonic() + 30
        while not await db.client.exists(db.keys.setup_done):
            assert time.monotonic() < deadline, "first start did not finish"
            await asyncio.sleep(0.05)
        yield site
    finally:
        await node.stop()
        await site.client.close()


@pytest.fixture
async def upadmin(upsite: Site) -> Headers:
    sid, _ = await upsite.login()
    return {"X-Session-ID": sid}


def multipart(parts: list[Part]) -> tuple[bytes, str]:
    """A multipart/form-data body written by hand, so file names reach the server exactly as given (aiohttp's
    FormData percent-encodes them)."""
    boundary = "b" + secrets.token_hex(8)
    out = bytearray()
    for name, filename, content in parts:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        if filename is not None:
            out += f'; filename="{filename}"\r\nContent-Type: application/octet-stream'.encode()
        out += b"\r\n\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def post(client: Client, api: str, headers: Headers, parts: list[Part], **query: str) -> tuple[int, Reply]:
    body, ctype = multipart(parts)
    resp = await client.post(f"/api/app/{api}/v1", data=io.BytesIO(body), params=query,
                             headers={**headers, "Content-Type": ctype})  # fmt: skip
    return resp.status, await resp.json()


async def leftovers(site: Site) -> list[str]:
    """Every stored file and every spool file of the site."""
    files = site.node.stores.files
    assert isinstance(files, RedisFileStore)
    stored = [p.decode() if isinstance(p, bytes) else str(p)
              for p in await files.db.client.zrange(files.db.keys.files_index, 0, -1)]  # fmt: skip
    spool = site.settings.data_dir / "tmp"
    return sorted(stored + ([str(p) for p in spool.iterdir()] if spool.exists() else []))


# -- names ----------------------------------------------------------------------------------------------------


def test_names() -> None:
    cases = {  # client name: (File.filename, key name)
        "Report 1.TXT": ("Report 1.TXT", "report_1.txt"),
        "../../etc/passwd": ("passwd", "passwd.bin"),
        ".htaccess": (".htaccess", "_htaccess.bin"),
        "README": ("README", "readme.bin"),
        "résumé (final).pdf": ("r_sum_ (final).pdf", "r_sum_final_.pdf"),
        "a/b\\c": ("c", "c.bin"),
        "C:\\Users\\me\\data.csv": ("data.csv", "data.csv"),
        "two\r\nlines.txt": ("two_lines.txt", "two_lines.txt"),
        "tab\there.txt": ("tab_here.txt", "tab_here.txt"),
        "x" * 300 + ".tar.gz": ("x" * 248 + ".tar.gz", "x" * 121 + ".tar.gz"),
        "weird;$(rm -rf)&.sh": ("weird_$(rm -rf)&.sh", "weird_rm_-rf_.sh"),
    }
    for name, (shown, stored) in cases.items():
        assert (display_name(name), url_name(name)) == (shown, stored), name
        assert valid_name(name), name
    for bad in ("", ".", "..", "...", "a/", "a/..", " ", None):
        assert not valid_name(bad), bad


def test_limits_are_lowered_never_raised() -> None:
    limits = UploadLimits(file_bytes=100, request_bytes=1000, files=5)
    assert limits.lowered(file_bytes=10, files=50) == UploadLimits(file_bytes=10, request_bytes=1000, files=5)
    assert limits.body_bytes > limits.request_bytes + limits.json_bytes


# -- the receiver ---------------------------------------------------------------------------------------------


async def test_fields_files_and_the_file_objects(upsite: Site, upadmin: Headers) -> None:
    parts: list[Part] = [("note", None, b"plain"), ("file1", "Data Sheet.CSV", b"a,b\n1,2\n"),
                         ("json", None, b'{"note": "from json", "n": 3}'), ("file2", "README", b"read me"),
                         ("file3", "data sheet.csv", b"same key name")]  # fmt: skip
    status, data = await post(upsite.client, "test_receive", upadmin, parts, owner="1")
    assert status == 200, data
    assert data["fields"] == {"note": "from json", "n": 3}  # the json field is merged over the plain ones
    first, second, third = data["files"]
    random = first["path"].split("/")[3]
    assert first["path"] == f"files/users/admin/{random}/data_sheet.csv"  # one random segment per request
    assert second["path"] == f"files/users/admin/{random}/readme.bin"
    assert third["path"] == f"files/users/admin/{random}/data_sheet-2.csv"  # never two files on one key
    assert len(random) >= 20 and random == random.lower()
    assert {k: first[k] for k in ("filename", "size", "username", "job")} == {
        "filename": "Data Sheet.CSV", "size": 8, "username": "admin", "job": "jx"}  # fmt: skip
    assert first["id"].startswith("f") and abs(first["date"] - time.time()) < 3600
    files = upsite.node.stores.files
    assert await files.get(first["path"]) == b"a,b\n1,2\n" and await files.get(third["path"]) == b"same key name"
    # Another request gets another random segment.
    _, again = await post(upsite.client, "test_receive", upadmin, [("file1", "Data Sheet.CSV", b"x")])
    assert again["files"][0]["path"].split("/")[3] != random


async def test_a_prefix_from_the_fields_waits_for_all_of_them(upsite: Site, upadmin: Headers) -> None:
    parts: list[Part] = [("file1", "one.txt", b"first"), ("file2", "two.txt", b"second"),
                         ("json", None, b'{"box": "b1"}')]  # fmt: skip
    status, data = await post(upsite.client, "test_receive", upadmin, parts, by="fields")
    assert status == 200, data
    assert [f["path"].rsplit("/", 2)[0::2] for f in data["files"]] == [["files/bucket/b1", "one.txt"],
                                                                       ["files/bucket/b1", "two.txt"]]  # fmt: skip
    assert await upsite.node.stores.files.get(data["files"][1]["path"]) == b"second"
    before = await leftovers(upsite)
    refused: list[Part] = [("file1", "one.txt", b"x"), ("box", None, b"../")]
    status, data = await post(upsite.client, "test_receive", upadmin, refused, by="fields")
    assert (status, data["description"]) == (400, "Parameter 'box' is required."), data
    assert await leftovers(upsite) == before  # the spool file went too


async def test_refusals_leave_nothing_behind(upsite: Site, upadmin: Headers) -> None:
    ok_file: Part = ("file1", "kept.txt", b"would be kept")
    refusals: list[tuple[list[Part], dict[str, str], int, str, str]] = [
        ([ok_file, ("file2", "empty.txt", b"")], {}, 400, "api",
         "File 'file2' is missing required size property, or is zero bytes."),
        ([ok_file, ("file2", "..", b"x")], {}, 400, "api",
         "File 'file2' is missing required name property, or name is invalid."),
        ([ok_file, ("file2", "", b"x")], {}, 400, "api",
         "File 'file2' is missing required name property, or name is invalid."),
        ([ok_file, ("json", None, b"{not json")], {}, 400, "api", "Failed to parse JSON: "),
        ([ok_file, ("json", None, b"[1, 2]")], {}, 400, "api", "Failed to parse JSON: "),
        ([ok_file, ("file2", "big.bin", b"x" * (MiB + 1))], {}, 413, "api",
         "File 'file2' is too large: the limit is 1048576 bytes per file."),
        ([ok_file, *[(f"f{i}", f"{i}.bin", b"x" * (MiB - 10)) for i in range(3)]], {}, 413, "api",
         "Upload too large: the limit is 2097152 bytes of files per request."),
        ([ok_file, *[(f"f{i}", f"{i}.txt", b"x") for i in range(4)]], {}, 413, "api",
         "Too many files: at most 4 per request."),
        ([ok_file, ("file2", "b.txt", b"x")], {"files": "1"}, 413, "api", "Too many files: at most 1 per request."),
        ([ok_file, *[(f"n{i}", None, b"v") for i in range(65)]], {}, 413, "api",
         "Too many form fields: at most 64 per request."),
        ([ok_file, ("note", None, b"x" * (16 * 1024 + 1))], {}, 413, "api", "Form field 'note' is too large"),
        ([ok_file, ("json", None, b'{"a": "' + b"x" * 70_000 + b'"}')], {}, 413, "api",
         "Form field 'json' is too large"),
        ([ok_file, ("note", None, b"\xff\xfe")], {}, 400, "api", "Form field 'note' is not valid UTF-8 text."),
    ]  # fmt: skip
    for parts, query, status, code, text in refusals:
        got, data = await post(upsite.client, "test_receive", upadmin, parts, **query)
        assert (got, data["code"]) == (status, code) and data["description"].startswith(text), (text, data)
        assert await leftovers(upsite) == [], text
    # A body declared larger than any allowed one is refused before it is read.
    resp = await upsite.client.post("/api/app/test_receive/v1", data=io.BytesIO(b"x" * (8 * MiB)), headers={
        **upadmin, "Content-Type": "multipart/form-data; boundary=zz"})  # fmt: skip
    data = await resp.json()
    assert resp.status == 413 and data["description"].startswith("Upload too large"), data
    for ctype in ("application/json", "text/plain"):
        resp = await upsite.client.post("/api/app/test_receive/v1", data=b"{}",
                                        headers={**upadmin, "Content-Type": ctype})  # fmt: skip
        assert resp.status == 415, ctype
    assert await leftovers(upsite) == []


async def test_a_full_store_refuses_with_507_and_keeps_nothing(upsite: Site, upadmin: Headers) -> None:
    stores = upsite.node.stores
    live = stores.files
    stores.files = RedisFileStore(stores.db, max_bytes_total=1000)
    try:
        status, data = await post(upsite.client, "test_receive", upadmin,
                                  [("file1", "a.txt", b"a" * 600), ("file2", "b.txt", b"b" * 600)])  # fmt: skip
        assert (status, data["code"]) == (507, "file") and "full" in data["description"], data
        assert await leftovers(upsite) == []
    finally:
        stores.files = live


async def test_the_store_limit_caps_the_per_file_limit(upsite: Site, upadmin: Headers) -> None:
    stores = upsite.node.stores
    live = stores.files
    stores.files = RedisFileStore(stores.db, max_file_bytes=1000)
    try:
        status, data = await post(upsite.client, "test_receive", upadmin, [("file1", "a.txt", b"a" * 1001)])
        assert (status, data["description"]) == (413, "File 'file1' is too large: the limit is 1000 bytes per file.")
        assert await leftovers(upsite) == []
    finally:
        stores.files = live


# -- endpoints ------------------------------------------------------------------------------------------------


async def user(site: Site, admin: Headers, name: str, **fields: Any) -> Headers:
    body = {"username": name, "email": f"{name}@example.com", "full_name": name, "password": f"pw-{name}", **fields}
    await ok(site, "admin_create", body, admin, ns="user")
    sid, _ = await site.login(name, f"pw-{name}")
    return {"X-Session-ID": sid}


async def test_upload_files_answers_urls(upsite: Site, upadmin: Headers) -> None:
    status, data = await post(upsite.client, "upload_files", upadmin, [("file1", "Notes.md", b"# hi"),
                                                                      ("file2", "pic.png", b"\x89PNG")])  # fmt: skip
    assert status == 200, data
    origin = str(upsite.client.make_url("/")).rstrip("/")
    paths = [url.removeprefix(origin + "/") for url in data["urls"]]
    assert [p.split("/")[:3] for p in paths] == [["files", "users", "admin"]] * 2, data
    assert [p.rsplit("/", 1)[1] for p in paths] == ["notes.md", "pic.png"]
    resp = await upsite.client.get("/" + paths[0], headers=upadmin)
    assert resp.status == 200 and await resp.read() == b"# hi"
    status, data = await post(upsite.client, "upload_files", upadmin, [("note", None, b"no file")])
    assert (status, data) == (500, {"code": "file", "description": "No file upload data found in request."})
    status, data = await post(upsite.client, "upload_files", {}, [("file1", "a.txt", b"x")])
    assert status in (401, 403) and data["code"] != 0
    assert len(await leftovers(upsite)) == 2


async def test_upload_job_input_files_needs_run_jobs(upsite: Site, upadmin: Headers) -> None:
    viewer = await user(upsite, upadmin, "viewer", privileges={})
    status, data = await post(upsite.client, "upload_job_input_files", viewer, [("file1", "in.txt", b"x")])
    assert (status, data["code"]) == (403, "access"), data
    runner = await user(upsite, upadmin, "runner", privileges={"run_jobs": 1})
    status, data = await post(upsite.client, "upload_job_input_files", runner, [("file1", "In.txt", b"input!")])
    assert status == 200, data
    [file] = data["files"]
    assert file["path"].startswith("files/users/runner/") and file["path"].endswith("/in.txt")
    assert (file["filename"], file["size"], file["username"]) == ("In.txt", 6, "runner")
    # A username a path cannot hold is named by its hash ('+' is never in a username).
    accented = await user(upsite, upadmin, "josé", privileges={"run_jobs": 1})
    status, data = await post(upsite.client, "upload_job_input_files", accented, [("file1", "j.txt", b"j")])
    assert status == 200, data
    segment = data["files"][0]["path"].split("/")[2]
    assert segment.startswith("+") and len(segment) == 33 and data["files"][0]["username"] == "josé"


# -- run_event's input.files ----------------------------------------------------------------------------------


async def test_run_event_checks_input_files(upsite: Site, upadmin: Headers) -> None:
    stores = upsite.node.stores
    body = {"title": "Inputs", "enabled": True, "category": "general", "plugin": "testplug", "targets": ["main"],
            "params": {"duration": 1}, "triggers": [{"type": "manual", "enabled": True}]}  # fmt: skip
    event = (await ok(upsite, "create_event", body, upadmin))["event"]
    _, mine = await post(upsite.client, "upload_job_input_files", upadmin, [("file1", "mine.txt", b"12345")])
    [own] = mine["files"]
    other = await user(upsite, upadmin, "other", privileges={"run_jobs": 1})
    _, theirs = await post(upsite.client, "upload_job_input_files", other, [("file1", "theirs.txt", b"x")])
    await stores.files.put("files/bucket/b1/r/shared.txt", b"bucket file")

    async def run(files: Any) -> tuple[int, Reply]:
        return await upsite.call("run_event", {"id": event["id"], "input": {"files": files}}, headers=upadmin)

    refused: list[tuple[Any, int, str]] = [
        ([{**theirs["files"][0]}], 403, "Job input file is not yours to use: files/users/other/"),
        ([{"path": "logs/jobs/j1/log.txt.gz"}], 403, "Job input file is not yours to use"),
        ([{"path": "files/anything/else.txt"}], 403, "Job input file is not yours to use"),
        ([{"path": "files/jobs/j1/../../users/other/x"}], 400, "Parameter 'input.files[0].path' is not a stored"),
        ([{"path": "files/bucket/b1/r/missing.txt"}], 400, "Job input file not found: files/bucket/b1/r/missing"),
        ([{"filename": "no path"}], 400, "Parameter 'input.files[0]' must be a File object with a path"),
        ("files/users/admin", 400, "Parameter 'input.files' must be an array"),
        ([{"path": "x"}] * 1001, 400, "Parameter 'input.files' may list at most 1000 files"),
    ]
    for files, status, text in refused:
        got, data = await run(files)
        assert got == status and data["description"].startswith(text), (files if isinstance(files, str) else
                                                                         files[:1], data)  # fmt: skip
    got, data = await run([{**own, "size": 999, "filename": "evil\r\nname", "extra": "dropped"},
                           {"path": "files/bucket/b1/r/shared.txt", "bucket": "b1"}])  # fmt: skip
    assert got == 200, data
    job = (await ok(upsite, "get_job", {"id": data["id"]}, upadmin, method="GET", query={"id": data["id"]}))["job"]
    first, second = job["input"]["files"]
    want = {"path": own["path"], "size": 5, "filename": "evil_name", "username": "admin"}
    assert {k: first[k] for k in want} == want and "extra" not in first
    assert (second["filename"], second["size"], second["bucket"]) == ("shared.txt", 11, "b1")
    assert first["owned"] is True and "owned" not in second  # the first job given the upload owns it
    # The same upload given to a second run (or a client claiming `owned`): that job only lists it, so deleting
    # either job first leaves the other's input in place.
    got, data = await run([{**own, "owned": True}])
    assert got == 200, data
    again = (await ok(upsite, "get_job", {"id": data["id"]}, upadmin, method="GET", query={"id": data["id"]}))["job"]
    assert "owned" not in again["input"]["files"][0]


# -- delete_job_file and the cascade --------------------------------------------------------------------------


async def completed_job(site: Site, **fields: Any) -> dict[str, Any]:
    now = time.time()
    job: dict[str, Any] = {"id": generate_id("j"), "state": "complete", "code": 0, "event": "ev",
                           "category": "general", "plugin": "testplug", "server": "s1", "source": "user",
                           "started": now - 2, "completed": now, "elapsed": 2, **fields}  # fmt: skip
    assert await site.node.stores.jobs.launch(site.node.fence(), job)
    return job


async def test_delete_job_file(upsite: Site, upadmin: Headers) -> None:
    files = upsite.node.stores.files
    job_id = generate_id("j")
    out = f"files/jobs/{job_id}/r1/out.txt"
    upload = "files/users/admin/r2/in.txt"
    bucket = "files/bucket/b1/r3/shared.txt"
    ticket = "files/tickets/t1/r4/spec.txt"
    parent = "files/jobs/jparent/r5/made.txt"  # another job's output, passed on as input
    for path in (out, upload, bucket, ticket, parent):
        await files.put(path, b"data")
    job = await completed_job(upsite, id=job_id, files=[{"id": "f1", "path": out, "filename": "out.txt"}],
                              input={"data": {"k": 1}, "files": [
                                  {"id": "f2", "path": upload, "filename": "in.txt", "owned": True},
                                  {"id": "f3", "path": bucket, "filename": "shared.txt", "bucket": "b1"},
                                  {"id": "f4", "path": ticket, "filename": "spec.txt", "ticket": "t1"},
                                  {"id": "f5", "path": parent, "filename": "made.txt"}]})  # fmt: skip

    async def delete(path: str) -> tuple[int, Reply]:
        return await upsite.call("delete_job_file", {"id": job["id"], "path": path}, headers=upadmin)

    assert await delete(bucket) == (500, {"code": "job", "description": "Bucket files cannot be deleted from job: "
                                                                        "shared.txt"})  # fmt: skip
    assert await delete(ticket) == (500, {"code": "job", "description": "Ticket files cannot be deleted from job: "
                                                                        "spec.txt"})  # fmt: skip
    missing = "files/jobs/other/x.txt"
    assert await delete(missing) == (500, {"code": "job", "description": f"Job file not found: {missing}"})
    assert (await delete(out))[0] == 200
    assert (await delete(upload))[0] == 200
    assert (await delete(parent))[0] == 200
    stored = (await ok(upsite, "get_job", {}, upadmin, method="GET", query={"id": job["id"]}))["job"]
    assert stored["files"] == [] and [f["id"] for f in stored["input"]["files"]] == ["f3", "f4"]
    assert stored["input"]["data"] == {"k": 1}
    assert await files.stat(out) is None and await files.stat(upload) is None
    assert await files.stat(bucket) is not None and await files.stat(ticket) is not None
    assert await files.stat(parent) is not None  # not this job's to delete: only the entry went
    _, found = await upsite.call("search_activity", headers=upadmin, method="GET",
                                 query={"query": "action:job_delete_file", "limit": "10"})  # fmt: skip
    assert len(found["rows"]) == 3, found
    viewer = await user(upsite, upadmin, "nodelete", privileges={})
    got, data = await upsite.call("delete_job_file", {"id": job["id"], "path": bucket}, headers=viewer)
    assert (got, data["code"]) == (403, "access")
    active = await completed_job(upsite, state="active", files=[{"path": out}])
    got, data = await upsite.call("delete_job_file", {"id": active["id"], "path": out}, headers=upadmin)
    assert data["description"] == f"Job is still active: {active['id']}"


def test_job_input_uploads() -> None:
    job = {"input": {"files": [{"path": "files/users/a/r/x.txt", "owned": True}, {"path": "files/users/a/r/s.txt"},
                               {"path": "files/users/a/r/y.txt", "bucket": "b", "owned": True},
                               {"path": "files/users/a/r/z.txt", "ticket": "t", "owned": True},
                               {"path": "files/bucket/b/r/w", "owned": True}, {"path": "files/tickets/t/r/v"},
                               {"path": "files/jobs/parent/r/out.txt", "owned": True}, {"path": 5}, "junk"]}}
    assert job_input_uploads(job) == ["files/users/a/r/x.txt"]
    assert job_input_uploads({**job, "retried": True}) == []  # its retry owns them now
    assert job_input_uploads({"input": "x"}) == job_input_uploads({}) == []


async def test_deleting_a_job_deletes_its_input_uploads(upsite: Site, upadmin: Headers) -> None:
    files = upsite.node.stores.files
    paths = {"upload": "files/users/admin/r1/in.txt", "flagged": "files/users/admin/r2/b.txt",
             "bucket": "files/bucket/b1/r3/shared.txt", "ticket": "files/tickets/t1/r4/spec.txt",
             "parent": "files/jobs/jparent/r5/out.txt"}  # fmt: skip
    for path in paths.values():
        await files.put(path, b"data")
    job = await completed_job(upsite, input={"files": [{"path": paths["upload"], "owned": True},
                                                       {"path": paths["flagged"], "bucket": "b1"},
                                                       {"path": paths["bucket"]}, {"path": paths["ticket"]},
                                                       {"path": paths["parent"]}]})  # fmt: skip
    await ok(upsite, "delete_job", {"id": job["id"]}, upadmin)
    assert await leftovers(upsite) == sorted(p for k, p in paths.items() if k != "upload")


# -- a real job reads its uploaded input ----------------------------------------------------------------------


async def test_an_uploaded_input_file_reaches_a_real_job(tmp_path: Path) -> None:
    async with Cluster(tmp_path / "cluster", size=1, extra=("--secret-key", SECRET)) as c:
        node = await c.wait_single_primary()
        site = NodeSite(c, node, await Jobs.login(c, node))
        assert c.http is not None
        body, ctype = multipart([("file1", "Input Data.txt", b"bytes from the upload\n")])
        async with c.http.post(f"{node.url}/api/app/upload_job_input_files/v1", data=body,
                               headers={**site.jobs.headers, "Content-Type": ctype}) as resp:  # fmt: skip
            reply = orjson.loads(await resp.read())
        assert reply["code"] == 0, reply
        async with agent(config_for([node.url], tmp_path / "a")):
            await site.jobs.wait_servers(node, 1)
            job = await site.job("#!/bin/sh\ncat 'Input Data.txt'\n", input={"files": reply["files"]})
        assert job["code"] == 0, job
        assert await site.jobs.log(node, job["id"]) == "bytes from the upload\n"
        path = reply["files"][0]["path"]
        async with c.http.get(f"{node.url}/{path}", headers=site.jobs.headers) as resp:
            assert resp.status == 200
        await site.jobs.ok(node, "delete_job", {"id": job["id"]})
        async with c.http.get(f"{node.url}/{path}", headers=site.jobs.headers) as resp:
            assert resp.status == 404  # the job's input upload went with it


async def test_hostile_names_over_http(upsite: Site, upadmin: Headers) -> None:
    names = ["../../etc/passwd", ".htaccess", "résumé.pdf", "x" * 300 + ".txt", "a/b\\c", "..\\..\\boot.ini"]
    parts: list[Part] = [(f"f{i}", name, b"x") for i, name in enumerate(names[:4])]
    status, data = await post(upsite.client, "test_receive", upadmin, parts)
    assert status == 200, data
    got = [(f["filename"], f["path"].rsplit("/", 1)[1]) for f in data["files"]]
    assert got == [("passwd", "passwd.bin"), (".htaccess", "_htaccess.bin"), ("r_sum_.pdf", "r_sum_.pdf"),
                   ("x" * 251 + ".txt", "x" * 124 + ".txt")], got  # fmt: skip
    status, data = await post(upsite.client, "test_receive", upadmin, [(f"f{i}", n, b"y") for i, n in
                                                                        enumerate(names[4:])])  # fmt: skip
    assert status == 200, data
    # aiohttp reads a quoted file name as an RFC 7230 quoted-string: `\\x` is `x`, so these arrive as
    # `a/bc` and `....boot.ini`.
    assert [(f["filename"], f["path"].rsplit("/", 1)[1]) for f in data["files"]] == [
        ("bc", "bc.bin"), ("....boot.ini", "_boot.ini")]  # fmt: skip
    for file in data["files"]:
        assert file["path"].startswith("files/users/admin/") and file["path"].count("/") == 4


async def test_a_caller_hands_on_job_and_ticket_files_it_may_read(upsite: Site, upadmin: Headers) -> None:
    """The owner rules of GET /files decide for a caller who is not an administrator, on the API front too."""
    stores = upsite.node.stores
    body = {"title": "Inputs", "enabled": True, "category": "general", "plugin": "testplug", "targets": ["main"],
            "params": {"duration": 1}, "triggers": [{"type": "manual", "enabled": True}]}  # fmt: skip
    event = (await ok(upsite, "create_event", body, upadmin))["event"]
    runner = await user(upsite, upadmin, "runner", privileges={"run_jobs": 1})
    await stores.files.put("files/jobs/jnone/r/out.txt", b"of no job")
    await stores.files.put("files/tickets/tnone/r/a/att.txt", b"of no ticket")
    for path in ("files/jobs/jnone/r/out.txt", "files/tickets/tnone/r/a/att.txt"):
        got, data = await upsite.call("run_event", {"id": event["id"], "input": {"files": [{"path": path}]}},
                                      headers=runner)  # fmt: skip
        assert got == 403 and data["description"].startswith("Job input file is not yours to use"), (path, data)
