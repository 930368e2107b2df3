"""Outside services that actions talk to, started by a test on loopback: a web hook receiver and an SMTP sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.servers import free_port


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: str
    at: float


class HookReceiver:
    """Answers every request with 200 and keeps it; `hold()` makes requests wait (counted on arrival) until
    `release()`, to kill a conductor while its web hook is in flight."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Received] = []
        self._open = asyncio.Event()
        self._open.set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append(Received(request.method, request.path_qs, dict(request.headers), body, time.time()))
        await self._open.wait()
        return web.json_response({"ok": True})

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path.split("?")[0] == path]

    async def __aenter__(self) -> HookReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Mail:
    sender: str
    to: list[str]
    subject: str
    text: str
    raw: bytes


@dataclass
class _Handler:
    messages: list[Mail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain", "html"))
        text = body.get_content() if body is not None else ""
        to = [str(r) for r in envelope.rcpt_tos]
        mail = Mail(str(envelope.mail_from), to, str(msg.get("Subject", "")), text, raw)
        with self.lock:
            self.messages.append(mail)
        return "250 OK"


class MailSink:
    """An SMTP server on loopback that keeps every message (aiosmtpd, in its own thread)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._handler = _Handler()
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[Mail]:
        with self._handler.lock:
            return list(self._handler.messages)

    def args(self) -> tuple[str, ...]:
        """The `podium serve` options that send email here."""
        return ("--smtp-host", "127.0.0.1", "--smtp-port", str(self.port), "--smtp-tls", "none")

    def __enter__(self) -> MailSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    async def __aenter__(self) -> MailSink:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


async def eventually(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `check()` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.05)
