"""User uploads on a real node (real valkey): upload_files, upload_job_input_files and delete_job_file."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.authkit import Client, Site

Headers = dict[str, str]
Part = tuple[str, Any] | tuple[str, bytes, str]


def form(*parts: tuple[str, Any]) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in parts:
        if isinstance(value, tuple):
            data.add_field(name, value[1], filename=value[0], content_type="application/octet-stream")
        else:
            data.add_field(name, value)
    return data


async def post(client: Client, api: str, headers: Headers, *parts: tuple[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/api/app/{api}/v1", data=form(*parts), headers=headers)
    return resp.status, await resp.json()


async def test_upload_files_smoke(site: Site, admin: Headers) -> None:
    status, data = await post(site.client, "upload_files", admin, ("file1", ("Hello-World.TXT", b"hi there")),
                              ("json", '{"a": 1}'))
    assert status == 200, data
    url = data["urls"][0]
    path = url.split("/", 3)[3]
    assert path.startswith("files/users/admin/") and path.endswith("/hello-world.txt"), url
    resp = await site.client.get("/" + path, headers=admin)
    assert resp.status in (200, 403)


async def test_upload_refusals_smoke(site: Site, admin: Headers) -> None:
    status, data = await post(site.client, "upload_files", admin, ("file1", ("a.txt", b"")))
    assert (status, data["code"]) == (400, "api") and "zero bytes" in data["description"], data
    status, data = await post(site.client, "upload_files", admin, ("file1", ("..", b"x")))
    assert (status, data["code"]) == (400, "api") and "name is invalid" in data["description"], data
    status, data = await post(site.client, "upload_files", admin, ("x", "y"))
    assert (status, data["code"]) == (500, "file"), data
    status, data = await post(site.client, "upload_files", admin, ("json", "{bad"), ("file1", ("a.txt", b"x")))
    assert (status, data["code"]) == (400, "api") and data["description"].startswith("Failed to parse JSON"), data
    assert await site.node.stores.files.stat("files/users/admin") is None
