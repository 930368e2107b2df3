"""`[http-plugin]`: one HTTP request as a job, with aiohttp.

Params as xyOps' HTTP plugin: `method`, `url`, `headers` (one `Name: value` per line), `data` (the body, not
for GET/HEAD), `timeout`, `idle_timeout`, `connect_timeout` (seconds), `follow` (redirects), `ssl_cert_bypass`,
`success_match` / `error_match` (regular expressions on the body), `download` (the body becomes a job file).
`{{ }}` placeholders in url, headers and data are filled from the job. Secrets are redacted from what is
logged. The body kept in memory is bounded (MAX_BODY); a download goes to the job's directory (MAX_DOWNLOAD).
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from ..plugin import BuiltinPlugin, Launch, Sink, say
from ..template import fill

MAX_BODY = 32 * 1024 * 1024
MAX_DOWNLOAD = 16 * 1024 * 1024 * 1024
SHOWN_BODY = 1024 * 1024
_URL = re.compile(r"^https?://\S+$", re.IGNORECASE)
_HEADER = re.compile(r"^([^:]+):\s*(.+)$")


class Failure(Exception):
    """The request failed: the job's code and description."""

    def __init__(self, code: Any, description: str) -> None:
        super().__init__(description)
        self.code = code


def _seconds(value: Any, default: float) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default or None
    return seconds if seconds > 0 else None


def scrubber(secrets: Mapping[str, Any]) -> Callable[[str], str]:
    values = [str(v) for v in secrets.values() if str(v)]
    if not values:
        return str
    words = [re.escape(v) for v in values] + [re.escape(urllib.parse.quote(v, safe="")) for v in values]
    pattern = re.compile("|".join(sorted(set(words), key=len, reverse=True)))
    return lambda text: pattern.sub("(REDACTED)", text)


def headers_of(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.replace("\r\n", "\n").strip().split("\n"):
        match = _HEADER.match(line.strip())
        if match:
            pairs.append((match.group(1).strip(), match.group(2).strip()))
    return pairs


class HttpPlugin(BuiltinPlugin):
    """Sends the request the params describe."""

    async def work(self, launch: Launch, sink: Sink) -> int:
        params = launch.params
        scrub = scrubber(launch.secrets)
        method = str(params.get("method") or "GET").upper()
        url = fill(str(params.get("url") or ""), launch.job)
        if not _URL.match(url):
            sink.record({"xy": 1, "code": 1, "description": "Malformed URL: " + (scrub(url) or "(n/a)")})
            return 0
        headers = fill(str(params.get("headers") or ""), launch.job)
        body = fill(str(params.get("data") or ""), launch.job) if method not in ("GET", "HEAD") else ""
        say(sink, f"Sending HTTP {method} to URL:\n{scrub(url)}")
        update: dict[str, Any] = {"xy": 1, "complete": True}
        started = time.monotonic()
        try:
            checks = [re.compile(str(params.get("success_match") or ".*")),
                      re.compile(str(params.get("error_match") or "(?!)"))]  # fmt: skip
        except re.error as exc:
            sink.record({"xy": 1, "code": 1, "description": f"Invalid match expression: {exc}"})
            return 0
        try:
            status, reason, text = await self._request(launch, sink, method, url, headers, body, update)
            if status < 200 or status >= 400:
                raise Failure(status, f"HTTP {status} {reason}")
            if checks[1].search(text):
                raise Failure(1, f"Response contains error match: {params.get('error_match')}")
            if not checks[0].search(text):
                raise Failure(1, f"Response missing success match: {params.get('success_match')}")
            update.update(code=0, description=f"Success (HTTP {status} {reason})")
        except Failure as exc:
            update.update(code=exc.code, description=str(exc))
            update.pop("files", None)
        say(sink, update["description"])
        update["perf"] = {"total": round(time.monotonic() - started, 4)}
        update["markdown"] = {"title": "HTTP Request Details",
                              "content": self._details(method, scrub(url), params, scrub(headers), scrub(body),
                                                       update)}  # fmt: skip
        sink.record(update)
        return 0

    async def _request(self, launch: Launch, sink: Sink, method: str, url: str, headers: str, body: str,
                       update: dict[str, Any]) -> tuple[int, str, str]:  # fmt: skip
        params = launch.params
        idle = _seconds(params.get("idle_timeout") or params.get("timeout"), 0)
        timeout = aiohttp.ClientTimeout(total=_seconds(params.get("timeout"), 0),
                                        sock_connect=_seconds(params.get("connect_timeout"), 10), sock_read=idle)
        follow = bool(params.get("follow"))
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
                method, url, headers=headers_of(headers), data=body.encode() if body else None,
                allow_redirects=follow, max_redirects=32, ssl=not params.get("ssl_cert_bypass"),
            ) as resp:  # fmt: skip
                got = {k: v for k, v in resp.headers.items()}
                update["data"] = {"statusCode": resp.status, "statusMessage": resp.reason or "", "headers": got}
                if params.get("download"):
                    self._save_name(launch, url, resp, update)
                    await self._download(launch, sink, resp)
                    return resp.status, resp.reason or "", ""
                text = await self._text(sink, resp)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Failure(1, f"Error: {str(exc) or type(exc).__name__}") from None
        kind = got.get("Content-Type", "")
        if re.search(r"(application|text)/json", kind, re.I) or re.match(r"^\s*\{[\s\S]+\}\s*$", text):
            try:
                update["data"]["json"] = json.loads(text)
            except ValueError as exc:
                sink.stdout(f"\nWARNING: Failed to parse JSON response: {exc}\n".encode())
        if re.search(r"(text|javascript|json|css|html)", kind, re.I):
            update["_body"] = text
        return resp.status, resp.reason or "", text

    @staticmethod
    async def _text(sink: Sink, resp: aiohttp.ClientResponse) -> str:
        body = bytearray()
        size = resp.content_length or 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            if len(body) + len(chunk) > MAX_BODY:
                raise Failure(1, f"Response body is larger than {MAX_BODY} bytes")
            body += chunk
            if size:
                sink.record({"xy": 1, "progress": min(1.0, len(body) / size)})
        return body.decode(resp.get_encoding() if resp.charset else "utf-8", errors="replace")

    @staticmethod
    def _save_name(launch: Launch, url: str, resp: aiohttp.ClientResponse, update: dict[str, Any]) -> None:
        name = str(launch.params.get("filename") or "") or urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
        disposition = resp.headers.get("Content-Disposition", "")
        match = re.search(r'filename="(.+?)"', disposition) or re.search(r"filename=([^;]+)", disposition)
        if match:
            name = match.group(1).strip()
        name = name.replace("/", "_") or "output"
        if not re.search(r"\.\w+$", name):
            kind = resp.headers.get("Content-Type", "").split(";")[0].strip()
            name += "." + (kind.rsplit("/", 1)[-1] if kind else "bin")
        path = launch.cwd / f"{launch.job.get('id')}-download.bin"
        update["files"] = [{"path": str(path), "filename": name, "delete": True}]

    @staticmethod
    async def _download(launch: Launch, sink: Sink, resp: aiohttp.ClientResponse) -> None:
        path = launch.cwd / f"{launch.job.get('id')}-download.bin"
        size, got = resp.content_length or 0, 0
        with open(path, "wb") as handle:  # noqa: ASYNC230 (small writes to a local file)
            async for chunk in resp.content.iter_chunked(256 * 1024):
                got += len(chunk)
                if got > MAX_DOWNLOAD:
                    raise Failure(1, f"Download is larger than {MAX_DOWNLOAD} bytes")
                handle.write(chunk)
                if size:
                    sink.record({"xy": 1, "progress": min(1.0, got / size)})

    @staticmethod
    def _details(method: str, url: str, params: Mapping[str, Any], headers: str, body: str,
                 update: dict[str, Any]) -> str:  # fmt: skip
        data = update.get("data") or {}
        lines = ["### Summary", f"- **Method:** {method}", f"- **URL:** {url}",
                 f"- **Redirects:** {'Follow' if params.get('follow') else 'n/a'}",
                 f"- **Timeout:** {params.get('timeout') or 'none'} seconds"]  # fmt: skip
        if data:
            lines.append(f"- **Response:** HTTP {data['statusCode']} {data['statusMessage']}")
        else:
            lines.append(f"- **Error:** {update.get('description')}")
        if headers.strip():
            lines += ["", "### Request Headers:", "", "```http", headers.strip(), "```"]
        if body.strip():
            lines += ["", "### Request Body:", "", "```", body.strip(), "```"]
        if data:
            lines += ["", "### Response Headers:", "", "```http",
                      *(f"{k}: {v}" for k, v in data["headers"].items()), "```"]  # fmt: skip
        text = update.pop("_body", None)
        if text:
            shown = "(Too large to display)" if len(text) >= SHOWN_BODY else text.strip()
            lines += ["", "### Response Body:", "", "```", shown, "```"]
        return "\n".join(lines) + "\n"
