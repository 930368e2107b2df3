"""test_web_hook really sends: against a local receiver on 127.0.0.1 (plain and self-signed TLS), never elsewhere."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from api.handlers.webhooks import TEST_MESSAGE
from tests.authkit import Site

Json = dict[str, Any]


# -- a local receiver ---------------------------------------------------------------------------------


@dataclass
class Receiver:
    base: str = ""
    seen: list[Json] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_route("*", "/redirect", self.redirect)
        app.router.add_route("*", "/slow", self.slow)
        app.router.add_route("*", "/flaky/{key}", self.flaky)
        app.router.add_route("*", "/big", self.big)
        app.router.add_route("*", "/to-ftp", self.to_ftp)
        app.router.add_route("*", "/loop", self.loop)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.seen.append({"method": request.method, "path": request.path, "query": dict(request.query),
                          "headers": dict(request.headers), "body": body})  # fmt: skip
        return web.json_response({"received": len(body)}, headers={"X-Reply": "yes"})

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/echo?via=redirect")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.wait_for(self.release.wait(), 10)
        return web.Response(text="late")

    async def flaky(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self.hits[key] += 1
        if self.hits[key] == 1:
            return web.Response(status=500, text="try again")
        return web.Response(text=f"ok after {self.hits[key]}")

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(text="x" * 10_000)

    async def to_ftp(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("ftp://127.0.0.1/file")

    async def loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")


async def _serve(app: web.Application, ctx: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if ctx else 'http'}://127.0.0.1:{port}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    runner, rec.base = await _serve(rec.app())
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()


async def _test(site: Site, admin: dict[str, str], **params: Any) -> Json:
    status, data = await site.call("test_web_hook", params, headers=admin)
    assert status == 200 and data["code"] == 0, data
    result: Json = data["result"]
    assert isinstance(result["details"], str) and result["details"].startswith("- **Method:**")
    return result


# -- test_web_hook ------------------------------------------------------------------------------------


async def test_sends_rendered_request(site: Site, admin: dict[str, str], receiver: Receiver) -> None:
    result = await _test(
        site, admin, id="adhoc", title="Ad hoc", method="put", url=receiver.base + "/echo?msg={{text}}&t={{now}}",
        headers=[{"name": "X-Text", "value": "{{text}}"}, {"name": "X-Hook", "value": "{{hook.id}}/{{hook.title}}"},
                 {"name": "Content-Type", "value": "application/json"}],
        body='{"t": "{{text}}", "method": "{{hook.method}}", "missing": "{{nope.x}}", "n": {"a": 1}}',
    )  # fmt: skip
    assert result["code"] == 0 and result["status"] == 200 and result["description"] == "Success (HTTP 200 OK)"
    assert result["headers"]["X-Reply"] == "yes" and result["attempts"] == 1 and result["elapsed_ms"] > 0
    (seen,) = receiver.seen
    assert seen["method"] == "PUT" and seen["query"]["msg"] == TEST_MESSAGE and seen["query"]["t"].isdigit()
    assert seen["headers"]["X-Text"] == TEST_MESSAGE and seen["headers"]["X-Hook"] == "adhoc/Ad hoc"
    assert seen["headers"]["User-Agent"] == "Podium/WebHook"
    assert json.loads(seen["body"]) == {"t": TEST_MESSAGE, "method": "PUT", "missing": "", "n": {"a": 1}}
    assert json.loads(result["body"]) == {"received": len(seen["body"])}
    assert "**Response:** HTTP 200 OK" in result["details"] and TEST_MESSAGE in result["details"]
    # A test changes nothing: no hook was stored.
    assert (await site.call("get_web_hook", {"id": "adhoc"}, headers=admin))[0] == 404


async def test_overrides_merge_over_stored_hook(site: Site, admin: dict[str, str], receiver: Receiver) -> None:
    stored = {"id": "stored", "title": "Stored", "method": "POST", "url": receiver.base + "/echo",
              "headers": [{"name": "X-Stored", "value": "kept"}], "body": "stored body"}  # fmt: skip
    assert (await site.call("create_web_hook", stored, headers=admin))[1]["code"] == 0
    assert (await _test(site, admin, id="stored", title="Stored"))["code"] == 0
    assert (await _test(site, admin, id="stored", title="Stored", method="patch",
                        body="override {{hook.title}}"))["code"] == 0  # fmt: skip
    assert (await _test(site, admin, id="stored", title="Stored", method="GET"))["code"] == 0
    first, second, third = receiver.seen
    assert (first["method"], first["body"], first["headers"]["X-Stored"]) == ("POST", "stored body", "kept")
    assert (second["method"], second["body"], second["headers"]["X-Stored"]) == ("PATCH", "override Stored", "kept")
    assert (third["method"], third["body"]) == ("GET", "")  # GET sends no body
    _, got = await site.call("get_web_hook", {"id": "stored"}, headers=admin)
    assert got["web_hook"]["revision"] == 1 and got["web_hook"]["method"] == "POST"
    # Overrides are validated like a stored hook; without a stored hook the params must be a whole hook.
    status, bad = await site.call("test_web_hook", {"id": "stored", "title": "S", "url": "gopher://x"}, headers=admin)
    assert (status, bad["code"]) == (400, "api") and "'url'" in bad["description"]
    status, bad = await site.call("test_web_hook", {"id": "nothing", "url": receiver.base}, headers=admin)
    assert (status, bad["code"]) == (400, "api") and "title" in bad["description"]
    status, bad = await site.call("test_web_hook", {"title": "x"}, headers=admin)
    assert (status, bad["code"]) == (400, "api") and "id" in bad["description"]


async def test_title_is_required_and_details_carry_the_response_body(site: Site, admin: dict[str, str],
                                                                     receiver: Receiver) -> None:  # fmt: skip
    stored = {"id": "titled", "title": "Titled", "method": "POST", "url": receiver.base + "/echo", "body": "12345"}
    assert (await site.call("create_web_hook", stored, headers=admin))[1]["code"] == 0
    for params in ({"id": "titled"}, {"id": "titled", "title": " "}, {**stored, "id": "adhoc", "title": ""}):
        status, bad = await site.call("test_web_hook", params, headers=admin)
        assert (status, bad["code"], bad["description"]) == (400, "api", "Missing parameter: title"), params
    assert receiver.seen == []  # nothing was sent
    result = await _test(site, admin, id="titled", title="Titled")
    assert result["body"] == '{"received": 5}'
    assert '**Response body:**\n\n```\n{"received": 5}\n```' in result["details"]
    failed = await _test(site, admin, id="flaky", title="Flaky", method="GET", url=receiver.base + "/flaky/body")
    assert failed["code"] == "webhook" and failed["status"] == 500
    assert "**Response:** HTTP 500" in failed["details"] and "try again" in failed["details"]


async def test_redirects(site: Site, admin: dict[str, str], receiver: Receiver) -> None:
    hook = {"id": "redir", "title": "R", "method": "POST", "url": receiver.base + "/redirect", "body": "payload"}
    followed = await _test(site, admin, **hook, follow=True)
    assert followed["code"] == 0 and followed["status"] == 200
    assert followed["redirects"] == [receiver.base + "/echo?via=redirect"] == [followed["url"]]
    (seen,) = receiver.seen
    assert seen["method"] == "GET" and seen["body"] == ""  # a 302 after POST continues as GET
    not_followed = await _test(site, admin, **hook, follow=False)
    assert (not_followed["code"], not_followed["status"], not_followed["redirects"]) == ("webhook", 302, [])
    assert "not followed" in not_followed["description"] and not_followed["headers"]["Location"] == "/echo?via=redirect"
    assert len(receiver.seen) == 1
    ftp = await _test(site, admin, **{**hook, "url": receiver.base + "/to-ftp"}, follow=True, retries=3)
    assert ftp["code"] == "webhook" and "not an http:// or https:// URL" in ftp["description"] and ftp["attempts"] == 1
    loop = await _test(site, admin, **{**hook, "url": receiver.base + "/loop"}, follow=True)
    assert loop["code"] == "webhook" and loop["description"] == "More than 10 redirects"
    # A URL that only becomes one after rendering is checked too.
    empty = await _test(site, admin, **{**hook, "url": "{{ nothing.here }}/x"})
    assert empty["code"] == "webhook" and "The URL is not an http:// or https:// URL" in empty["description"]


async def test_timeout(site: Site, admin: dict[str, str], receiver: Receiver) -> None:
    result = await _test(site, admin, id="slow", title="Slow", method="GET", url=receiver.base + "/slow", timeout=1)
    assert result["code"] == "webhook" and result["description"] == "Timed out after 1 s" and result["status"] == 0
    assert 900 <= result["elapsed_ms"] < 5000 and "**Error:** Timed out" in result["details"]


async def test_retries(site: Site, admin: dict[str, str], receiver: Receiver) -> None:
    base = {"id": "flaky", "title": "Flaky", "method": "POST"}
    retried = await _test(site, admin, **base, url=receiver.base + "/flaky/a", retries=2)
    assert (retried["code"], retried["status"], retried["attempts"], retried["body"]) == (0, 200, 2, "ok after 2")
    assert "2 attempts made" in retried["details"]
    once = await _test(site, admin, **base, url=receiver.base + "/flaky/b")
    assert (once["code"], once["status"], once["attempts"]) == ("webhook", 500, 1)
    assert once["description"] == "HTTP 500 Internal Server Error" and once["body"] == "try again"
    # Nothing listens on the port of a server that has just stopped: a connection error, retried.
    runner, dead = await _serve(web.Application())
    await runner.cleanup()
    refused = await _test(site, admin, **base, url=dead + "/x", retries=1)
    assert (refused["code"], refused["attempts"]) == ("webhook", 2)
    assert refused["description"].startswith("Connection failed")


async def test_body_excerpt(site: Site, admin: dict[str, str], receiver: Receiver) -> None:
    result = await _test(site, admin, id="big", title="Big", method="GET", url=receiver.base + "/big")
    assert result["code"] == 0 and result["body"] == "x" * 4096 and result["body_truncated"] is True
    assert result["headers"]["Content-Length"] == "10000" and "(first 4 KB)" in result["details"]


def _self_signed(tmp: Path) -> ssl.SSLContext:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))  # fmt: skip
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


async def test_tls_certificate_bypass(site: Site, admin: dict[str, str], tmp_path: Path) -> None:
    rec = Receiver()
    runner, base = await _serve(rec.app(), _self_signed(tmp_path))
    try:
        hook = {"id": "tls", "title": "TLS", "method": "POST", "url": base + "/echo", "body": "hi", "retries": 2}
        checked = await _test(site, admin, **hook)
        assert checked["code"] == "webhook" and checked["description"].startswith("TLS error")
        assert checked["attempts"] == 1 and not rec.seen  # a certificate problem is not retried
        bypassed = await _test(site, admin, **hook, ssl_cert_bypass=True)
        assert bypassed["code"] == 0 and bypassed["status"] == 200 and rec.seen[0]["body"] == "hi"
        assert "**TLS certificate check:** off" in bypassed["details"]
    finally:
        await runner.cleanup()
