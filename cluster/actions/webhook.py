"""Send one web hook request (digest 3.11) and describe what happened.

`prepare()` renders the hook's `{{ }}` templates against the data; `send()` makes the request with
the hook's timeout, retries (connection errors, timeouts and 5xx answers, with a short backoff),
redirects (followed by hand, at most MAX_REDIRECTS, http and https only, credentials dropped when
the origin changes) and TLS verification switch. `send()` never raises for a failing target: the
failure is in the result's `code` ("webhook") and `description`.

For job actions, `job_hook_data()` builds what the templates read (xyOps' JobHookData) and `run_web_hook()` fires a
stored hook with it, as an Outcome with the hook's secrets scrubbed from what it records.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from cluster.expressions import templates

from .hookdata import job_context
from .result import Outcome

EXCERPT_BYTES = 4096
MAX_REDIRECTS = 10
USER_AGENT = "Podium/WebHook"
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)  # pause before retry n; the last value repeats
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")
_BODY_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A web hook request with every template rendered."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    timeout: float
    retries: int
    follow: bool
    verify: bool


@dataclass(slots=True)
class Answer:
    """What the target answered on the last attempt (status 0 and `error` set when there was no answer)."""

    status: int = 0
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    truncated: bool = False
    url: str = ""
    redirects: list[str] = field(default_factory=list)
    error: str = ""


class Refused(Exception):
    """A request Podium will not make (bad URL, redirect elsewhere than http/https, too many redirects)."""


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


def prepare(hook: Mapping[str, Any], data: Mapping[str, Any]) -> Outgoing:
    """Render url (values URL-encoded, except a leading base-URL placeholder), header values and body."""
    method = str(hook.get("method") or "POST").upper()
    url = templates.render(str(hook.get("url") or ""), data, lambda s: quote(s, safe="-_.!~*'()"), raw_start=True)
    headers = [(str(h["name"]), _one_line(templates.render(str(h.get("value", "")), data)))
               for h in hook.get("headers") or []]  # fmt: skip
    if not any(name.lower() == "user-agent" for name, _ in headers):
        headers.append(("User-Agent", USER_AGENT))
    body = templates.render(str(hook.get("body") or ""), data)
    send_body = method not in ("GET", "HEAD") and bool(body.strip())
    return Outgoing(method=method, url=url, headers=tuple(headers), body=body.encode() if send_body else None,
                    timeout=float(hook.get("timeout") or 30), retries=int(hook.get("retries") or 0),
                    follow=bool(hook.get("follow")), verify=not hook.get("ssl_cert_bypass"))  # fmt: skip


def _http_url(url: URL, what: str) -> URL:
    if url.scheme not in ("http", "https") or not url.host:
        raise Refused(f"{what} is not an http:// or https:// URL: {str(url)[:200]}")
    return url


async def _excerpt(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    got = bytearray()
    while len(got) <= EXCERPT_BYTES:
        chunk = await resp.content.read(EXCERPT_BYTES + 1 - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got[:EXCERPT_BYTES]), len(got) > EXCERPT_BYTES


async def _exchange(session: aiohttp.ClientSession, req: Outgoing) -> Answer:
    """One attempt: the request and any redirects it is allowed to follow."""
    try:
        url = _http_url(URL(req.url), "The URL")
    except ValueError as exc:
        raise Refused(f"The URL is invalid: {exc}") from None
    method, body, headers = req.method, req.body, CIMultiDict(req.headers)
    answer = Answer()
    per_hop = aiohttp.ClientTimeout(total=req.timeout)
    async with asyncio.timeout(req.timeout):  # the whole chain, body excerpt included
        while True:
            async with session.request(method, url, headers=headers, data=body, allow_redirects=False,
                                       ssl=req.verify, timeout=per_hop,
                                       skip_auto_headers=("Content-Type",)) as resp:  # fmt: skip
                location = resp.headers.get("Location")
                if req.follow and resp.status in _REDIRECT_STATUSES and location:
                    if len(answer.redirects) >= MAX_REDIRECTS:
                        raise Refused(f"More than {MAX_REDIRECTS} redirects")
                    try:
                        target = _http_url(url.join(URL(location)), "A redirect target")
                    except ValueError as exc:
                        raise Refused(f"A redirect target is invalid: {exc}") from None
                    if resp.status == 303 or (resp.status in (301, 302) and method not in ("GET", "HEAD")):
                        method = "GET" if method != "HEAD" else method
                        body = None
                        for name in _BODY_HEADERS:
                            headers.popall(name, None)
                    if target.origin() != url.origin():
                        for name in _CREDENTIAL_HEADERS:
                            headers.popall(name, None)
                    answer.redirects.append(str(target))
                    url = target
                    continue
                raw, answer.truncated = await _excerpt(resp)
                answer.status, answer.reason, answer.url = resp.status, resp.reason or "", str(resp.url)
                for name, value in resp.headers.items():
                    answer.headers[name] = f"{answer.headers[name]}, {value}" if name in answer.headers else value
                answer.body = raw.decode(errors="replace")
                return answer


def _describe(exc: BaseException, req: Outgoing) -> str:
    if isinstance(exc, TimeoutError):
        return f"Timed out after {req.timeout:g} s"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"Connection failed: {exc}"
    if isinstance(exc, Refused):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, Refused | aiohttp.ClientSSLError | aiohttp.InvalidURL):
        return False
    return isinstance(exc, TimeoutError | aiohttp.ClientError)


async def _attempts(session: aiohttp.ClientSession, req: Outgoing) -> tuple[Answer, int]:
    answer, attempt = Answer(), 0
    for attempt in range(1, req.retries + 2):
        if attempt > 1:
            await asyncio.sleep(BACKOFF_S[min(attempt - 2, len(BACKOFF_S) - 1)])
        try:
            answer = await _exchange(session, req)
        except (Refused, TimeoutError, aiohttp.ClientError, ValueError) as exc:
            answer = Answer(error=_describe(exc, req), url=req.url)
            if not _retryable(exc):
                break
            continue
        if answer.status < 500:
            break
    return answer, attempt


async def send(req: Outgoing, session: aiohttp.ClientSession | None = None) -> dict[str, Any]:
    """Make the request (on `session`, or on a private one closed afterwards) and describe the outcome."""
    started = time.monotonic()
    if session is None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as own:
            answer, attempts = await _attempts(own, req)
    else:
        answer, attempts = await _attempts(session, req)
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    ok = not answer.error and 200 <= answer.status < 300
    if answer.error:
        description = answer.error
    else:
        description = f"HTTP {answer.status} {answer.reason}".strip()
        if ok:
            description = f"Success ({description})"
        elif answer.status in _REDIRECT_STATUSES and not req.follow:
            description += " (redirect not followed: 'follow' is off)"
    return {
        "code": 0 if ok else "webhook",
        "description": description,
        "status": answer.status,
        "headers": answer.headers,
        "body": answer.body,
        "body_truncated": answer.truncated,
        "url": answer.url or req.url,
        "redirects": answer.redirects,
        "attempts": attempts,
        "elapsed_ms": elapsed_ms,
        "details": details(req, answer, attempts, elapsed_ms),
    }


def _block(text: str, lang: str = "") -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{lang}\n{text.strip()}\n{fence}\n"


def details(req: Outgoing, answer: Answer, attempts: int, elapsed_ms: float) -> str:
    """A markdown account of the request and the answer, for the UI."""
    lines = [
        f"- **Method:** {req.method}",
        f"- **URL:** {req.url}",
        f"- **Follow redirects:** {f'yes (at most {MAX_REDIRECTS})' if req.follow else 'no'}",
        f"- **Retries:** {req.retries or 'none'} ({attempts} attempt{'s' if attempts != 1 else ''} made)",
        f"- **Timeout:** {req.timeout:g} s",
        f"- **TLS certificate check:** {'on' if req.verify else 'off'}",
        f"- **Elapsed:** {elapsed_ms:g} ms",
        "",
        "**Request headers:**\n\n" + _block("\n".join(f"{k}: {v}" for k, v in req.headers), "http"),
    ]
    if req.body:
        lines.append("**Request body:**\n\n" + _block(req.body.decode(errors="replace")))
    if answer.redirects:
        lines.append("**Redirects:**\n\n" + "\n".join(f"{n}. {u}" for n, u in enumerate(answer.redirects, 1)) + "\n")
    if answer.error:
        lines.append(f"**Error:** {answer.error}\n")
        return "\n".join(lines)
    lines.append(f"**Response:** HTTP {answer.status} {answer.reason}\n")
    lines.append("**Response headers:**\n\n" + _block("\n".join(f"{k}: {v}" for k, v in answer.headers.items()),
                                                      "http"))  # fmt: skip
    if answer.body:
        cut = f" (first {EXCERPT_BYTES // 1024} KB)" if answer.truncated else ""
        lines.append(f"**Response body{cut}:**\n\n" + _block(answer.body))
    return "\n".join(lines)


# -- job actions ---------------------------------------------------------------------------------------


def job_hook_data(job: Mapping[str, Any], event: Mapping[str, Any] | None, *, condition: str, base_url: str,
                  text: str = "", secret_key: str = "", action: Mapping[str, Any] | None = None,
                  category: Mapping[str, Any] | None = None, plugin: Mapping[str, Any] | None = None,
                  server: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """JobHookData for a job's web hook (hookdata.job_context), with `text` (the summary plus the action's own
    text) also under `content` and `message`, the keys Discord and Pushover read."""
    data = job_context(job, event, condition=condition, base_url=base_url, secret_key=secret_key, action=action,
                       category=category, plugin=plugin, server=server, text=text)  # fmt: skip
    data["content"] = data["message"] = data["text"]
    return data


def scrubber(secrets: Mapping[str, Any] | None) -> Callable[[str], str]:
    """Replaces every secret value (as is and URL-encoded) by "(REDACTED)": best effort, as in xyOps."""
    values = sorted({str(v) for v in (secrets or {}).values() if str(v)}, key=len, reverse=True)
    forms = [f for v in values for f in dict.fromkeys((v, quote(v, safe="-_.!~*'()")))]
    if not forms:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(f) for f in forms))
    return lambda text: pattern.sub("(REDACTED)", text)


async def run_web_hook(hook: Mapping[str, Any], data: Mapping[str, Any], session: aiohttp.ClientSession | None,
                       *, secrets: Mapping[str, Any] | None = None) -> Outcome:  # fmt: skip
    """Fire a stored hook with `data` and say how it went; never raises for a failing target. `secrets` (the hook's
    own, read as `{{ secrets.NAME }}`; default: those in `data`) are scrubbed from the Outcome. The daily cap
    (`max_per_day`) is the caller's to count: it owns the store."""
    hook_id = str(hook.get("id") or "")
    if not hook.get("enabled", True):
        return Outcome("webhook", f"Web Hook is disabled: {hook_id}")
    if secrets is None:
        found = data.get("secrets")
        secrets = found if isinstance(found, Mapping) else {}
    scrub = scrubber(secrets)
    started = time.monotonic()
    try:
        req = prepare(hook, {**data, "secrets": dict(secrets)})
    except (ValueError, KeyError, TypeError) as exc:  # a stored hook is validated; this is a last guard
        return Outcome("webhook", scrub(f"Web Hook {hook_id} cannot be prepared: {exc}"))
    result = await send(req, session)
    return Outcome(result["code"], scrub(str(result["description"])), scrub(str(result["details"])),
                   round((time.monotonic() - started) * 1000, 1))  # fmt: skip
