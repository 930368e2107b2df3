"""Buckets on one in-process node with real Redis: CRUD and privileges, data replace and merge, limits, files
put in place, deleting a file by criteria, emptying, the delete cascade through the file store, and concurrent
writers that never lose each other's change."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from storage.buckets import DEFAULT_MAX_FILE_BYTES, BucketError, Incoming, display_name, files_prefix, key_name
from storage.stores import Stores
from tests.authkit import Site, ok
from tests.test_definitions import make_user, refused
from tests.test_job_output_delete import stored_paths

Headers = dict[str, str]


def incoming(name: str, data: bytes, **extra: Any) -> Incoming:
    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(data), 7):  # several chunks, as a stream brings them
            yield data[at:at + 7]

    return Incoming(name, chunks, extra or {"username": "admin"})


async def create(site: Site, admin: Headers, **body: Any) -> str:
    reply = await ok(site, "create_bucket", {"title": "Artifacts", **body}, admin)
    return str(reply["bucket"]["id"])


async def contents(site: Site, admin: Headers, bucket_id: str) -> dict[str, Any]:
    return await ok(site, "get_bucket", {"id": bucket_id}, admin, method="GET", query={"id": bucket_id})


async def put(stores: Stores, site: Site, bucket_id: str, *files: Incoming) -> list[dict[str, Any]]:
    return await stores.buckets.put_files(site.node.fence(), bucket_id, list(files))


async def test_crud_data_and_what_a_client_may_not_set(site: Site, admin: Headers) -> None:
    bucket_id = await create(site, admin, data={"a": 1, "b": {"c": 2}},
                             files=[{"path": "files/jobs/j1/x/secret.txt", "filename": "secret.txt"}])
    assert bucket_id.startswith("b")
    got = await contents(site, admin, bucket_id)
    assert got["bucket"]["title"] == "Artifacts" and got["bucket"]["revision"] == 1
    assert "data" not in got["bucket"] and "files" not in got["bucket"]  # kept apart from the record
    assert got["data"] == {"a": 1, "b": {"c": 2}}
    assert got["files"] == []  # a client's list of paths is ignored, never stored
    rows = (await ok(site, "get_buckets", None, admin))["rows"]
    assert [r["id"] for r in rows] == [bucket_id] and "data" not in rows[0]
    multi = await ok(site, "get_multiple", {"lists": ["buckets"]}, admin)
    assert [r["id"] for r in multi["buckets"]] == [bucket_id]

    # update_bucket: the record merges, `data` replaces (as xyOps), `files` is ignored.
    reply = await ok(site, "update_bucket", {"id": bucket_id, "title": "Builds", "data": {"z": 9},
                                             "files": [{"path": "files/x", "filename": "x"}]}, admin)
    assert reply == {"code": 0}
    got = await contents(site, admin, bucket_id)
    assert got["bucket"]["title"] == "Builds" and got["bucket"]["revision"] == 2
    assert got["data"] == {"z": 9} and got["files"] == []

    # write_bucket_data merges shallowly; the id may come in the query (xyOps' documented curl form).
    reply = await ok(site, "write_bucket_data", {"data": {"y": [1, 2], "z": {"deep": True}}, "fetch": True}, admin,
                     query={"id": bucket_id})
    assert reply["data"] == {"z": {"deep": True}, "y": [1, 2]}
    reply = await ok(site, "write_bucket_data", {"id": bucket_id, "data": {"x": 0}}, admin)
    assert reply["data"] is None
    assert (await contents(site, admin, bucket_id))["data"] == {"z": {"deep": True}, "y": [1, 2], "x": 0}
    assert (await contents(site, admin, bucket_id))["bucket"]["revision"] == 2  # data writes leave the record

    # Errors: names and codes as xyOps has them.
    refused(*await site.call("create_bucket", {"id": bucket_id, "title": "Again"}, headers=admin), "bucket", 500,
            "already exists")
    assert (await contents(site, admin, bucket_id))["data"]["x"] == 0  # the refused create changed nothing
    refused(*await site.call("create_bucket", {"id": "Bad-Id", "title": "x"}, headers=admin), "api", 400, "id")
    refused(*await site.call("create_bucket", {"title": "  "}, headers=admin), "api", 400, "title")
    refused(*await site.call("create_bucket", {"title": "x", "data": [1]}, headers=admin), "api", 400, "data")
    refused(*await site.call("get_bucket", {"id": "nope"}, headers=admin), "notfound", 404, "Bucket not found: nope")
    refused(*await site.call("update_bucket", {"id": "nope", "title": "x"}, headers=admin), "bucket", 500,
            "Bucket not found")
    for api in ("write_bucket_data", "empty_bucket"):
        refused(*await site.call(api, {"id": "nope", "data": {"a": 1} if api == "write_bucket_data" else True},
                                 headers=admin), "bucket", 500, "Bucket not found: nope")  # fmt: skip
    refused(*await site.call("empty_bucket", {"id": bucket_id}, headers=admin), "bucket", 500,
            "Please specify files and/or data")
    refused(*await site.call("write_bucket_data", {"id": "a/b", "data": {}}, headers=admin), "api", 400, "id")


async def test_privileges(site: Site, admin: Headers) -> None:
    bucket_id = await create(site, admin, data={"k": "v"})
    reader = await make_user(site, admin, "reader", privileges={})
    editor = await make_user(site, admin, "editor", privileges={"edit_buckets": True})
    got = await contents(site, reader, bucket_id)  # any valid session may read
    assert got["data"] == {"k": "v"}
    assert len((await ok(site, "get_buckets", None, reader))["rows"]) == 1
    for api, body in (("create_bucket", {"title": "Mine"}), ("update_bucket", {"id": bucket_id, "title": "x"}),
                      ("write_bucket_data", {"id": bucket_id, "data": {"k": "w"}}),
                      ("empty_bucket", {"id": bucket_id, "data": True}),
                      ("delete_bucket_file", {"id": bucket_id, "filename": "a.txt"}),
                      ("delete_bucket", {"id": bucket_id})):  # fmt: skip
        refused(*await site.call(api, body, headers=reader), "access", 403)
    await ok(site, "write_bucket_data", {"id": bucket_id, "data": {"k": "w"}}, editor)
    await ok(site, "update_bucket", {"id": bucket_id, "notes": "edited"}, editor)
    refused(*await site.call("create_bucket", {"title": "Mine"}, headers=editor), "access", 403)
    refused(*await site.call("delete_bucket", {"id": bucket_id}, headers=editor), "access", 403)
    assert (await contents(site, admin, bucket_id))["data"] == {"k": "w"}


async def test_limits(site: Site, admin: Headers) -> None:
    stores = site.node.stores
    bucket_id = await create(site, admin)
    # Data: bounded on the way in, and as merged.
    big = {"blob": "x" * (600 * 1024)}
    await ok(site, "write_bucket_data", {"id": bucket_id, "data": big}, admin)
    status, data = await site.call("write_bucket_data", {"id": bucket_id, "data": {"more": "y" * (600 * 1024)}},
                                   headers=admin)  # fmt: skip
    refused(status, data, "bucket", 500, "at most")
    assert set((await contents(site, admin, bucket_id))["data"]) == {"blob"}
    body = json.dumps({"id": bucket_id, "data": {"b": "z" * (1100 * 1024)}}).encode()
    resp = await site.client.post("/api/app/write_bucket_data/v1", data=io.BytesIO(body),
                                  headers={**admin, "Content-Type": "application/json"})  # fmt: skip
    refused(resp.status, await resp.json(), "api", 400, "data")

    # Files: the count (before any byte is written) and the size of one file (as it streams).
    stores.buckets.max_files, stores.buckets.max_file_bytes = 3, 64
    try:
        await put(stores, site, bucket_id, incoming("a.txt", b"a"), incoming("b.txt", b"b"))
        before = await stored_paths(stores.files)
        try:
            await put(stores, site, bucket_id, incoming("c.txt", b"c"), incoming("d.txt", b"d"))
            raise AssertionError("a fourth file was taken")
        except BucketError as exc:
            assert "maximum number of allowed files" in str(exc)
        try:
            await put(stores, site, bucket_id, incoming("c.txt", b"c" * 65))
            raise AssertionError("an oversized file was taken")
        except BucketError as exc:
            assert "maximum allowed bucket file size" in str(exc)
        assert await stored_paths(stores.files) == before  # nothing left behind by the refusals
        # Replacing a listed file is not a new one: still within the count.
        files = await put(stores, site, bucket_id, incoming("a.txt", b"A2"), incoming("c.txt", b"c"))
        assert [f["filename"] for f in files] == ["a.txt", "b.txt", "c.txt"]
    finally:
        stores.buckets.max_files, stores.buckets.max_file_bytes = 100, 1 << 30


async def test_files_in_place_by_criteria_empty_and_the_delete_cascade(site: Site, admin: Headers) -> None:
    stores = site.node.stores
    bucket_id = await create(site, admin, data={"keep": 1})
    other = await create(site, admin, title="Other")
    await put(stores, site, other, incoming("theirs.txt", b"not mine"))
    first = await put(stores, site, bucket_id, incoming("Report 1.CSV", b"v1"), incoming("../../etc/x.bin", b"x"))
    assert [f["filename"] for f in first] == ["Report 1.CSV", "x.bin"]
    report = first[0]
    assert report["path"].startswith(files_prefix(bucket_id)) and report["path"].endswith("/report_1.csv")
    assert report["size"] == 2 and report["username"] == "admin" and report["id"].startswith("f")
    assert await stores.files.get(report["path"]) == b"v1"
    # The same name again replaces the file in place: same path (a stable link), same id, new bytes and size.
    again = await put(stores, site, bucket_id, incoming("Report 1.CSV", b"version two", job="j1", server="s1"))
    replaced = again[0]
    assert (replaced["path"], replaced["id"]) == (report["path"], report["id"])
    assert replaced["size"] == 11 and replaced["job"] == "j1" and "username" not in replaced
    assert await stores.files.get(report["path"]) == b"version two"
    assert [f["filename"] for f in (await contents(site, admin, bucket_id))["files"]] == ["Report 1.CSV", "x.bin"]
    # A replacement refused midway (the second file is over the limit) keeps the old bytes and leaves no copy.
    before = await stored_paths(stores.files)
    stores.buckets.max_file_bytes = 20
    try:
        with pytest.raises(BucketError, match="exceed"):
            await put(stores, site, bucket_id, incoming("Report 1.CSV", b"version three"),
                      incoming("big.bin", b"b" * 21))  # fmt: skip
    finally:
        stores.buckets.max_file_bytes = DEFAULT_MAX_FILE_BYTES
    assert await stores.files.get(report["path"]) == b"version two"
    assert await stored_paths(stores.files) == before

    # delete_bucket_file: every criterion must match; credentials are never criteria.
    refused(*await site.call("delete_bucket_file", {"id": bucket_id}, headers=admin), "bucket", 500,
            "No criteria specified")
    refused(*await site.call("delete_bucket_file", {"id": bucket_id, "filename": "x.bin", "size": 5},
                             headers=admin), "bucket", 500, "Bucket file not found")  # fmt: skip
    refused(*await site.call("delete_bucket_file", {"id": bucket_id, "colour": "red"}, headers=admin), "api", 400,
            "colour")
    x_path = first[1]["path"]
    await ok(site, "delete_bucket_file", {"id": bucket_id}, admin, method="GET",
             query={"id": bucket_id, "filename": "x.bin", "size": "1"})
    assert [f["filename"] for f in (await contents(site, admin, bucket_id))["files"]] == ["Report 1.CSV"]
    assert await stores.files.stat(x_path) is None

    # empty_bucket: files only, then data only.
    await ok(site, "empty_bucket", {"id": bucket_id, "files": True}, admin)
    got = await contents(site, admin, bucket_id)
    assert got["files"] == [] and got["data"] == {"keep": 1}
    assert await stores.files.stat(report["path"]) is None
    await put(stores, site, bucket_id, incoming("late.txt", b"late"))
    await ok(site, "empty_bucket", {"id": bucket_id, "data": True}, admin)
    got = await contents(site, admin, bucket_id)
    assert got["data"] == {} and [f["filename"] for f in got["files"]] == ["late.txt"]

    # delete_bucket: the record, its contents and every file under its prefix; the other bucket is untouched.
    await ok(site, "delete_bucket", {"id": bucket_id}, admin)
    assert [p for p in await stored_paths(stores.files) if p.startswith(files_prefix(bucket_id))] == []
    assert await stores.db.client.exists(stores.db.keys.bucket(bucket_id)) == 0
    refused(*await site.call("get_bucket", {"id": bucket_id}, headers=admin), "notfound", 404)
    theirs = (await contents(site, admin, other))["files"]
    assert await stores.files.get(theirs[0]["path"]) == b"not mine"
    # A new bucket of the same id starts empty, and a late writer cannot write into a deleted bucket.
    await create(site, admin, id=bucket_id)
    assert (await contents(site, admin, bucket_id))["files"] == []
    await ok(site, "delete_bucket", {"id": bucket_id}, admin)
    try:
        await stores.buckets.merge_data(site.node.fence(), bucket_id, {"late": 1})
        raise AssertionError("wrote into a deleted bucket")
    except BucketError as exc:
        assert "Bucket not found" in str(exc)
    assert await stores.db.client.exists(stores.db.keys.bucket(bucket_id)) == 0


async def test_concurrent_writers_lose_nothing(site: Site, admin: Headers) -> None:
    stores = site.node.stores
    bucket_id = await create(site, admin)
    merges = [site.call("write_bucket_data", {"id": bucket_id, "data": {f"k{i}": i}}, headers=admin)
              for i in range(40)]  # fmt: skip
    uploads = [put(stores, site, bucket_id, incoming(f"f{i}.txt", str(i).encode())) for i in range(10)]
    direct = [stores.buckets.merge_data(site.node.fence(), bucket_id, {f"d{i}": i}) for i in range(20)]
    results = await asyncio.gather(*merges, *uploads, *direct)
    assert all(r[1]["code"] == 0 for r in results[:40])
    got = await contents(site, admin, bucket_id)
    assert got["data"] == {**{f"k{i}": i for i in range(40)}, **{f"d{i}": i for i in range(20)}}
    assert sorted(f["filename"] for f in got["files"]) == sorted(f"f{i}.txt" for i in range(10))
    for file in got["files"]:
        assert await stores.files.get(file["path"]) == file["filename"][1:-4].encode()


def test_names() -> None:
    assert display_name("C:\\Users\\me\\My Report (final).txt") == "My Report (final).txt"
    assert display_name("a/b/we<ird>|name.txt") == "we_ird_name.txt"
    assert display_name("../..") == "" and display_name("...") == ""
    assert key_name("My Report (final).TXT") == "my_report_final_.txt"
    assert key_name(".hidden") == "_hidden"


async def upload(site: Site, headers: Headers, files: dict[str, tuple[str, bytes]], *,
                 query: dict[str, str] | None = None, **fields: str) -> tuple[int, dict[str, Any]]:  # fmt: skip
    form = aiohttp.FormData(default_to_multipart=True)
    for key, value in fields.items():
        form.add_field(key, value)
    for key, (name, data) in files.items():
        form.add_field(key, io.BytesIO(data), filename=name)
    resp = await site.client.post("/api/app/upload_bucket_files/v1", data=form, params=query or {}, headers=headers)
    return resp.status, await resp.json()


async def test_upload_bucket_files(site: Site, admin: Headers) -> None:
    stores = site.node.stores
    bucket_id = await create(site, admin)

    async def under_prefix() -> list[str]:
        return [p for p in await stored_paths(stores.files) if p.startswith(files_prefix(bucket_id))]

    status, reply = await upload(site, admin, {"file1": ("Report.CSV", b"a,b\n1,2\n"), "file2": ("README", b"hi")},
                                 query={"id": bucket_id})  # fmt: skip
    assert (status, reply["code"]) == (200, 0), reply
    files = reply["files"]
    assert [(f["filename"], f["size"], f["username"]) for f in files] == [("Report.CSV", 8, "admin"),
                                                                          ("README", 2, "admin")]
    report = files[0]
    assert report["path"].startswith(files_prefix(bucket_id)) and report["path"].endswith("/report.csv")
    assert await stores.files.get(report["path"]) == b"a,b\n1,2\n"
    assert sorted(await under_prefix()) == sorted(f["path"] for f in files)

    # The same name again, the bucket named in a form field this time (`bucket`, xyOps' alias): in place.
    status, reply = await upload(site, admin, {"f": ("Report.CSV", b"new bytes")}, bucket=bucket_id)
    assert (status, reply["code"]) == (200, 0), reply
    again = {f["filename"]: f for f in reply["files"]}
    assert again["Report.CSV"]["path"] == report["path"] and again["Report.CSV"]["id"] == report["id"]
    assert again["Report.CSV"]["size"] == 9 and await stores.files.get(report["path"]) == b"new bytes"
    assert sorted(await under_prefix()) == sorted(f["path"] for f in reply["files"])  # the upload's copy is gone
    assert (await contents(site, admin, bucket_id))["files"] == reply["files"]

    # Refusals keep nothing: the bucket's file count, an unknown bucket, no file, an empty file, no privilege.
    before = await stored_paths(stores.files)
    stores.buckets.max_files = 3
    try:
        status, reply = await upload(site, admin, {"a": ("one.txt", b"1"), "b": ("two.txt", b"2")},
                                     query={"id": bucket_id})  # fmt: skip
        refused(status, reply, "bucket", 500, "maximum number of allowed files")
    finally:
        stores.buckets.max_files = 100
    refused(*await upload(site, admin, {"a": ("x.txt", b"x")}, query={"id": "nope"}), "bucket", 500,
            "Bucket not found: nope")
    refused(*await upload(site, admin, {"a": ("x.txt", b"x")}, id="nope"), "bucket", 500, "Bucket not found: nope")
    refused(*await upload(site, admin, {}, id=bucket_id), "bucket", 500, "No file upload data")
    refused(*await upload(site, admin, {"a": ("x.txt", b"")}, id=bucket_id), "api", 400, "zero bytes")
    refused(*await upload(site, admin, {"a": ("x.txt", b"x")}), "api", 400, "id")
    reader = await make_user(site, admin, "reader", privileges={})
    refused(*await upload(site, reader, {"a": ("x.txt", b"x")}, query={"id": bucket_id}), "access", 403)
    assert await stored_paths(stores.files) == before
    assert len((await contents(site, admin, bucket_id))["files"]) == 2


async def test_concurrent_replacements_of_one_file_agree_with_the_list(site: Site, admin: Headers) -> None:
    """Writers replacing one file at once: the bytes that stay are those of the entry the list shows, and no
    staged copy is left behind."""
    stores = site.node.stores
    bucket_id = await create(site, admin)
    (first,) = await put(stores, site, bucket_id, incoming("same.txt", b"0"))
    writes = [put(stores, site, bucket_id, incoming("same.txt", bytes([65 + i]) * (i + 2))) for i in range(12)]
    await asyncio.gather(*writes)
    (entry,) = (await contents(site, admin, bucket_id))["files"]
    assert entry["path"] == first["path"]
    size = int(entry["size"])
    assert await stores.files.get(entry["path"]) == bytes([65 + size - 2]) * size
    assert [p for p in await stored_paths(stores.files) if p.startswith(files_prefix(bucket_id))] == [entry["path"]]
