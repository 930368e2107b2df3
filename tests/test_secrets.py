"""Secrets: metadata for everyone, values sealed at rest and shown only by decrypt_secret, never leaked."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from storage import codec
from storage.bus import invalidation_message
from storage.connection import Database
from storage.secretbox import SecretBox, SecretBoxError
from tests.authkit import Site

Json = dict[str, Any]


def distinctive() -> str:
    return "S3CR3T-" + secrets.token_hex(8)


async def create(site: Site, admin: dict[str, str], **body: Any) -> Json:
    status, data = await site.call("create_secret", {"title": "Database", **body}, headers=admin)
    assert status == 200 and data["code"] == 0, data
    secret: Json = data["secret"]
    return secret


async def decrypt(site: Site, admin: dict[str, str], secret_id: str) -> tuple[int, Json]:
    return await site.call("decrypt_secret", {"id": secret_id}, headers=admin)


async def test_round_trip(site: Site, admin: dict[str, str]) -> None:
    fields = [{"name": "DB_USER", "value": "app"}, {"name": "DB_PASS", "value": "pw-1"}]
    made = await create(site, admin, fields=fields, events=["e1"], notes="prod db")
    assert made["id"].startswith("z") and made["revision"] == 1 and made["enabled"] is True
    assert made["names"] == ["DB_PASS", "DB_USER"] and made["events"] == ["e1"] and made["web_hooks"] == []
    assert "fields" not in made and "encrypted" not in made
    assert (await decrypt(site, admin, made["id"]))[1] == {"code": 0, "fields": fields}

    edit = {"id": made["id"], "title": "DB", "plugins": ["p1"]}
    assert (await site.call("update_secret", edit, headers=admin))[0] == 200
    _, got = await site.call("get_secret", {"id": made["id"]}, headers=admin)
    assert got["secret"]["title"] == "DB" and got["secret"]["revision"] == 2 and got["secret"]["plugins"] == ["p1"]
    assert got["secret"]["names"] == ["DB_PASS", "DB_USER"]
    assert (await decrypt(site, admin, made["id"]))[1]["fields"] == fields  # metadata edit keeps the values

    new = [{"name": "TOKEN", "value": "t-2"}]
    assert (await site.call("update_secret", {"id": made["id"], "fields": new}, headers=admin))[0] == 200
    _, listed = await site.call("get_secrets", headers=admin)
    (row,) = listed["rows"]
    assert row["names"] == ["TOKEN"] and row["title"] == "DB" and listed["list"]["length"] == 1
    assert (await decrypt(site, admin, made["id"]))[1]["fields"] == new

    empty = await create(site, admin, title="Nothing yet")
    assert empty["names"] == [] and (await decrypt(site, admin, empty["id"]))[1]["fields"] == []

    assert (await site.call("delete_secret", {"id": made["id"]}, headers=admin))[0] == 200
    assert (await site.call("get_secret", {"id": made["id"]}, headers=admin))[0] == 404
    status, gone = await decrypt(site, admin, made["id"])
    assert status == 500 and gone["code"] == "secret" and made["id"] in gone["description"]


BAD_FIELDS: list[tuple[str, Callable[[str], Any], str]] = [
    ("bad name", lambda v: [{"name": "DB-PASS", "value": v}], "item 1 needs a name"),
    ("digit first", lambda v: [{"name": "OK", "value": v}, {"name": "9X", "value": v}], "item 2 needs a name"),
    ("newline", lambda v: [{"name": "A\n", "value": v}], "needs a name"),
    ("duplicate", lambda v: [{"name": "A", "value": v}, {"name": "A", "value": v + "2"}], "name A more than once"),
    ("not a string", lambda v: [{"name": "A", "value": 123}], "(A) needs a string value"),
    ("missing value", lambda v: [{"name": "A"}], "needs a string value"),
    ("not a list", lambda v: v, "must be an array"),
    ("item not object", lambda v: [["A", v]], "must be an object"),
]


@pytest.mark.parametrize(("case", "make", "problem"), BAD_FIELDS, ids=[c[0] for c in BAD_FIELDS])
async def test_validation_names_the_field_never_the_value(
    site: Site, admin: dict[str, str], case: str, make: Callable[[str], Any], problem: str
) -> None:
    value = distinctive()
    status, data = await site.call("create_secret", {"title": "T", "fields": make(value)}, headers=admin)
    assert (status, data["code"]) == (400, "api"), data
    assert "'fields'" in data["description"] and problem in data["description"], data
    assert value not in str(data)
    kept = await create(site, admin, fields=[{"name": "A", "value": "old"}])
    status, data = await site.call("update_secret", {"id": kept["id"], "fields": make(value)}, headers=admin)
    assert status == 400 and value not in str(data)
    assert (await decrypt(site, admin, kept["id"]))[1]["fields"] == [{"name": "A", "value": "old"}]
    _, listed = await site.call("get_secrets", headers=admin)
    assert [r["id"] for r in listed["rows"]] == [kept["id"]]  # the refused create wrote nothing


async def test_missing_title(site: Site, admin: dict[str, str]) -> None:
    value = distinctive()
    status, data = await site.call("create_secret", {"fields": [{"name": "A", "value": value}]}, headers=admin)
    assert (status, data["description"]) == (400, "Missing parameter: title")


async def test_only_admins_write_or_decrypt(site: Site, admin: dict[str, str]) -> None:
    made = await create(site, admin, fields=[{"name": "A", "value": "v"}])
    plain, _ = await site.admin_key(admin["X-Session-ID"], privileges={"create_roles": True})
    key = {"X-API-Key": plain}
    for name, body in [("create_secret", {"title": "X"}), ("decrypt_secret", {"id": made["id"]}),
                       ("update_secret", {"id": made["id"], "title": "Y"}), ("delete_secret", {"id": made["id"]})]:
        status, data = await site.call(name, body, headers=key)
        assert (status, data["code"]) == (403, "access"), (name, data)
    _, listed = await site.call("get_secrets", headers=key)
    assert [r["id"] for r in listed["rows"]] == [made["id"]] and listed["rows"][0]["title"] == "Database"
    assert (await site.call("get_secret", {"id": made["id"]}, headers=key))[0] == 200


async def test_secret_access_is_logged_without_values(site: Site, admin: dict[str, str]) -> None:
    value = distinctive()
    made = await create(site, admin, fields=[{"name": "API_TOKEN", "value": value}])
    await decrypt(site, admin, made["id"])
    _, found = await site.call("search_activity", {"query": "action:secret_access", "limit": 10}, headers=admin)
    assert found["list"]["length"] == 1
    (row,) = found["rows"]
    assert row["username"] == "admin" and row["description"] == "Database" and made["id"] in row["keywords"]
    assert row["secret"]["id"] == made["id"] and row["secret"]["names"] == ["API_TOKEN"]
    assert "encrypted" not in row["secret"] and value not in str(found)
    _, created = await site.call("search_activity", {"query": "action:secret_create", "limit": 10}, headers=admin)
    assert created["list"]["length"] == 1 and "encrypted" not in created["rows"][0]["secret"]


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


async def redis_bytes(db: Database) -> bytes:
    """Every key and value under this test's prefix, raw, whatever the type."""
    out = bytearray()
    c = db.client
    async for key in c.scan_iter(match=f"{db.keys.cluster}:*"):
        kind = _b(await c.type(key)).decode()
        out += _b(key) + b"\n"
        if kind == "string":
            out += _b(await c.get(key))
        elif kind == "hash":
            out += b"".join(_b(k) + _b(v) for k, v in (await c.hgetall(key)).items())
        elif kind == "zset":
            out += b"".join(_b(m) for m in await c.zrange(key, 0, -1))
        elif kind == "list":
            out += b"".join(_b(m) for m in await c.lrange(key, 0, -1))
        elif kind == "set":
            out += b"".join(_b(m) for m in await c.smembers(key))
        elif kind == "stream":
            out += b"".join(_b(i) + _b(f) for i, f in await c.xrange(key) or [])
        else:
            raise AssertionError(f"unexpected key type {kind} for {key!r}")
        out += b"\n"
    return bytes(out)


async def tamper(db: Database, secret_id: str, change: Callable[[bytes], bytes]) -> None:
    """Rewrite a stored secret's sealed blob behind the API's back and announce it like a write would."""
    key = db.keys.definition("secrets", secret_id)
    record = codec.unpack(_b(await db.client.get(key)))
    record["encrypted"] = base64.b64encode(change(base64.b64decode(record["encrypted"]))).decode()
    await db.client.set(key, codec.pack(record))
    await db.client.publish(db.keys.invalidate_channel, invalidation_message("secrets", secret_id))


def flip(blob: bytes) -> bytes:
    return blob[:20] + bytes([blob[20] ^ 0x01]) + blob[21:]


async def decrypt_until_refused(site: Site, admin: dict[str, str], secret_id: str,
                                opened: list[str] | None = None) -> tuple[int, Json]:  # fmt: skip
    """Decrypt until the tampered record is seen (a node may serve the old one from its cache until the
    invalidation arrives); each decryption that still succeeded is noted in `opened` (it is an access)."""
    deadline = time.monotonic() + 5
    while True:
        status, data = await decrypt(site, admin, secret_id)
        if data["code"] != 0 or time.monotonic() > deadline:
            return status, data
        if opened is not None:
            opened.append(secret_id)


async def test_values_leak_nowhere(
    site: Site, admin: dict[str, str], db: Database, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    value, other = distinctive(), distinctive()
    replies: list[Json] = []
    with structlog.testing.capture_logs() as logs:
        status, data = await site.call("create_secret", {"title": "Vault", "fields": [
            {"name": "PASSWORD", "value": value}, {"name": "OTHER", "value": other}]}, headers=admin)  # fmt: skip
        replies.append(data)
        sid = data["secret"]["id"]
        second = await create(site, admin, title="Second", fields=[{"name": "X", "value": "plain"}])
        for body in ({"id": second["id"], "fields": [{"name": "X", "value": value}]},
                     {"id": second["id"], "fields": [{"name": "bad-name", "value": value}]},
                     {"id": second["id"], "fields": [{"name": "X", "value": value}, {"name": "X", "value": value}]}):
            replies.append((await site.call("update_secret", body, headers=admin))[1])
        for name, params in [("get_secrets", {}), ("get_secret", {"id": sid}), ("get_secret", {"id": second["id"]}),
                             ("search_activity", {"query": "*", "limit": 100}), ("get_api_keys", {}),
                             ("get_roles", {}), ("get_global_state", {}), ("get_multiple", {"lists": "all"}),
                             ("search_revision_history", {"type": "secrets", "limit": 100})]:
            for _, reply in (await site.call(name, params, headers=admin),
                             await site.call(name, method="GET", query=params, headers=admin)):  # fmt: skip
                assert reply["code"] == 0, (name, reply)
                replies.append(reply)
        opened = (await decrypt(site, admin, sid))[1]
        assert {"name": "PASSWORD", "value": value} in opened["fields"]
        await tamper(db, sid, flip)
        status, refused = await decrypt_until_refused(site, admin, sid)
        replies.append(refused)
        replies.append((await site.call("search_activity", {"query": "*", "limit": 100}, headers=admin))[1])
    assert (status, refused["code"]) == (500, "secret") and "failed authentication" in refused["description"]
    assert any(e.get("event") == "secret_decrypt_failed" for e in logs), logs  # the capture did see our logs
    stored = await redis_bytes(db)
    assert b"Vault" in stored and b"PASSWORD" in stored  # the dump covers the secret's record
    captured = capsys.readouterr()
    for where, blob in [("replies", str(replies)), ("structlog", str(logs)), ("stdout", captured.out),
                        ("stderr", captured.err), ("stdlib logs", caplog.text),
                        ("redis", stored.decode("utf-8", "replace"))]:
        for secret in (value, other):
            assert secret not in blob, f"a secret value leaked into {where}"
    assert all("encrypted" not in str(r.get("secret", "")) for r in replies)


async def test_tampered_or_moved_blob_is_refused(site: Site, admin: dict[str, str], db: Database) -> None:
    value = distinctive()
    a = await create(site, admin, title="A", fields=[{"name": "A", "value": value}])
    b = await create(site, admin, title="B", fields=[{"name": "B", "value": "b"}])
    c = await create(site, admin, title="C", fields=[{"name": "C", "value": "c"}])
    stored_a = codec.unpack(_b(await db.client.get(db.keys.definition("secrets", a["id"]))))["encrypted"]
    opened = [a["id"]]
    await tamper(db, b["id"], lambda _: base64.b64decode(stored_a))  # a's sealed values copied onto b
    status, moved = await decrypt_until_refused(site, admin, b["id"], opened)
    assert (status, moved["code"]) == (500, "secret") and value not in str(moved)
    await tamper(db, c["id"], lambda blob: blob[:10])
    status, cut = await decrypt_until_refused(site, admin, c["id"], opened)
    assert (status, cut["code"]) == (500, "secret") and "truncated" in cut["description"]
    assert (await decrypt(site, admin, a["id"]))[1]["fields"] == [{"name": "A", "value": value}]
    _, found = await site.call("search_activity", {"query": "action:secret_access", "limit": 10}, headers=admin)
    assert sorted(r["secret"]["id"] for r in found["rows"]) == sorted(opened)  # failed decryptions are not access
    # Writing new values over a damaged blob repairs the secret.
    assert (await site.call("update_secret", {"id": b["id"], "fields": [{"name": "B", "value": "new"}]},
                            headers=admin))[0] == 200  # fmt: skip
    assert (await decrypt(site, admin, b["id"]))[1]["fields"] == [{"name": "B", "value": "new"}]


# -- the box itself ------------------------------------------------------------------------------------


def test_box_round_trip_and_format() -> None:
    box = SecretBox("cluster-key")
    one, two = box.seal(b"hello", b"secret:z1"), box.seal(b"hello", b"secret:z1")
    assert one != two and one[0] == 1 and len(one) == 1 + 12 + len(b"hello") + 16
    assert b"hello" not in one
    assert box.open_(one, b"secret:z1") == SecretBox("cluster-key").open_(two, b"secret:z1") == b"hello"
    assert "cluster-key" not in repr(box)


def test_box_refuses_other_key_other_record_and_damage() -> None:
    blob = SecretBox("key-one").seal(b"hello", b"secret:z1")
    with pytest.raises(SecretBoxError, match="failed authentication"):
        SecretBox("key-two").open_(blob, b"secret:z1")
    with pytest.raises(SecretBoxError, match="failed authentication"):
        SecretBox("key-one").open_(blob, b"secret:z2")
    with pytest.raises(SecretBoxError, match="failed authentication"):
        SecretBox("key-one").open_(flip(blob), b"secret:z1")
    with pytest.raises(SecretBoxError, match="truncated"):
        SecretBox("key-one").open_(blob[:20], b"secret:z1")
    with pytest.raises(SecretBoxError, match="unknown format version 2"):
        SecretBox("key-one").open_(b"\x02" + blob[1:], b"secret:z1")


def test_box_needs_a_key() -> None:
    with pytest.raises(SecretBoxError, match="no cluster secret key"):
        SecretBox("")
