"""The full-list reply of a family is encoded once per version, and gzipped for clients that accept it."""

from __future__ import annotations

import gzip
import json

from tests.authkit import Site


async def raw_get(site: Site, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    resp = await site.client.get(path, headers=headers, auto_decompress=False)
    return resp.status, dict(resp.headers), await resp.read()


async def test_big_lists_are_gzipped_on_request_and_fresh_after_writes(site: Site) -> None:
    sid, _ = await site.login()
    admin = {"X-Session-ID": sid}
    for i in range(60):
        await site.call("create_tag", {"id": f"tag_{i:03d}", "title": f"Tag number {i}"}, headers=admin)
    status, headers, body = await raw_get(site, "/api/app/get_tags/v1", {**admin, "Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    zipped = json.loads(gzip.decompress(body))
    status, headers, body = await raw_get(site, "/api/app/get_tags/v1", {**admin, "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in headers
    plain = json.loads(body)
    assert zipped == plain and plain["list"]["length"] == 62  # 60 + the two default tags

    # A write is visible in the next list (the cached encoding is per version of the family).
    await site.call("delete_tag", {"id": "tag_000"}, headers=admin)
    _, _, body = await raw_get(site, "/api/app/get_tags/v1", {**admin, "Accept-Encoding": "gzip"})
    ids = {t["id"] for t in json.loads(gzip.decompress(body))["rows"]}
    assert "tag_000" not in ids and "tag_001" in ids
