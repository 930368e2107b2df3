"""Job logs (digest 3.2): the stored log, the log by download token, the live tail and the job's SSE stream.
The agents' file upload is in jobfiles.py.

Podium always keeps a finished job's log in the file store (`logs/jobs/<id>/log.txt.gz`, storage/logs.py), so
`get_job_log` serves it for every finished job that wrote output (⚠ xyOps keeps logs under 1 MB inline in the job
record and does not serve those here). While a job runs its log is live in Redis and every node reads it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import structlog
from aiohttp import web

from cluster.actions.hookdata import download_token
from storage.files import CHUNK
from storage.logs import MAX_OFFSET, log_path

from ..agentauth import same, sha256_hex
from ..call import Call
from ..errors import ApiError
from ..files import stream_out
from ..params import ID_LEN, integer, text
from ..registry import AUTH, HANDLERS, NONE, Reply
from ..transport import stream_headers
from .jobs import can_see

log = structlog.get_logger("podium.joblogs")

JOB_ID = dataclasses.replace(text("id", required=True, max_len=ID_LEN, pattern=r"[A-Za-z0-9_]+", doc="job id"),
                             strict=True)  # fmt: skip
TOKEN = text("t", required=True, max_len=64, pattern=r"[\w-]+", doc="get_job's `token`")
TEXT_TYPE = "text/plain; charset=utf-8"
TAIL_DEFAULT, TAIL_MAX = 32768, 1024 * 1024

# stream_job
TICK_S = 0.25  # how often new output is looked for
UPDATE_EVERY = 4  # ticks between `update` events (1 s, as xyOps)
FRAME_BYTES = 64 * 1024  # output per `log` event
STREAM_MAX_S = 3600.0  # a stream then ends without `end`; EventSource reconnects with Last-Event-ID
LIVE_KEYS = ("cpu", "mem", "disk", "net", "updated", "position")
FINAL_EXTRAS = ("table", "html", "data", "files")


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain", charset="utf-8")


async def _visible_job(call: Call, job_id: str) -> dict[str, Any]:
    job = await call.stores.jobs.get(job_id)
    if job is None or not can_see(call.who, job):
        raise ApiError("notfound", f"Failed to locate job: {job_id}")  # same answer: no existence leak
    return job


def _complete(job: dict[str, Any]) -> bool:
    return job.get("state") == "complete"


def utf8_cut(data: bytes) -> int:
    """Length of the longest start of `data` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for its lead
        need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
        return len(data) - back if need > back else len(data)
    return len(data)


async def inflate(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Decompress a gzip stream piece by piece (at most CHUNK bytes of text at a time)."""
    d = zlib.decompressobj(wbits=31)
    async for chunk in chunks:
        data = d.decompress(chunk, CHUNK)
        while data:
            yield data
            data = d.decompress(d.unconsumed_tail, CHUNK) if d.unconsumed_tail else b""
    if tail := d.flush():
        yield tail


async def _live_chunks(call: Call, job_id: str, size: int) -> AsyncIterator[bytes]:
    for start in range(0, size, CHUNK):
        piece = await call.stores.logs.read(job_id, start, min(start + CHUNK, size))
        if not piece:
            return  # finalized meanwhile: what was sent is all of it there is live
        yield piece


async def _log_chunks(call: Call, job: dict[str, Any]) -> AsyncIterator[bytes] | None:
    """The job's log as text chunks: live while it runs, stored once finished (live again while a finished
    job's log is still being moved); None when it has none."""
    job_id = str(job["id"])
    path = log_path(job_id)
    for source in ("stored", "live") if _complete(job) else ("live", "stored"):
        if source == "live":
            size = await call.stores.logs.size(job_id)
            if size:
                return _live_chunks(call, job_id, size)
        elif await call.stores.files.stat(path) is not None:
            return inflate(call.stores.files.read(path))
    return None


# -- the stored log, the log by token, the tail ---------------------------------------------------------------


@HANDLERS.add("get_job_log", write=False, privilege=AUTH, args=(JOB_ID,))
async def get_job_log(call: Call) -> web.StreamResponse:
    """The finished job's log as stored (gzip, `Content-Encoding: gzip`); HTTP 204 when there is none."""
    job_id = call.params["id"]
    await _visible_job(call, job_id)
    path = log_path(job_id)
    if await call.stores.files.stat(path) is None:
        return web.Response(status=204)
    resp = web.StreamResponse(headers=stream_headers(call, {"Content-Type": TEXT_TYPE, "Content-Encoding": "gzip"}))
    return await stream_out(call.request, resp, call.stores.files.read(path))


async def _log_by_token(call: Call, download: bool) -> web.StreamResponse:
    job_id = call.params["id"]
    if not same(call.params["t"], download_token(job_id, call.stores.secret_key)):
        return _text(403, "(Authentication failed.)\n")
    job = await call.stores.jobs.get(job_id)
    if job is None:
        return _text(404, f"Job record not found: {job_id}\n")
    chunks = await _log_chunks(call, job)
    if chunks is None:
        return _text(404, f"No log file found for job: {job_id}\n")
    headers = {"Content-Type": TEXT_TYPE}
    if download:
        headers["Content-Disposition"] = f"attachment; filename=Podium-Job-Log-{job_id}.txt"
    return await stream_out(call.request, web.StreamResponse(headers=stream_headers(call, headers)), chunks)


@HANDLERS.add("view_job_log", write=False, privilege=NONE, args=(JOB_ID, TOKEN))
async def view_job_log(call: Call) -> web.StreamResponse:
    """The job's log as text (live while it runs), by get_job's download token `t`."""
    return await _log_by_token(call, download=False)


@HANDLERS.add("download_job_log", write=False, privilege=NONE, args=(JOB_ID, TOKEN))
async def download_job_log(call: Call) -> web.StreamResponse:
    """view_job_log as an attachment."""
    return await _log_by_token(call, download=True)


@HANDLERS.add("tail_live_job_log", write=False, privilege=AUTH,
              args=(JOB_ID, integer("bytes", TAIL_DEFAULT, ge=1, le=TAIL_MAX, doc="bytes from the end")))  # fmt: skip
async def tail_live_job_log(call: Call) -> Reply:
    """The end of a running job's log, from a line start; "" when the job is not running."""
    job_id, nbytes = call.params["id"], call.params["bytes"]
    job = await call.stores.jobs.get(job_id)
    if job is None or _complete(job):
        return {"text": ""}
    if not can_see(call.who, job):
        raise ApiError("notfound", f"Failed to locate job: {job_id}")
    data = await call.stores.logs.tail(job_id, nbytes)
    if len(data) == nbytes and await call.stores.logs.size(job_id) > nbytes:
        _, _, data = data.partition(b"\n")  # the first line is likely partial (xyOps drops it too)
    return {"text": data.decode("utf-8", "replace")}


# -- stream_job -----------------------------------------------------------------------------------------------


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


@dataclasses.dataclass(slots=True)
class _Watch:
    """What one stream has told its client so far."""

    offset: int
    updates: int = 0
    state: Any = None
    server_sent: bool = False
    redraw: Any = None

    def update(self, job: dict[str, Any]) -> dict[str, Any]:
        """The next `update` event: xyOps' keys, each when it changed or is set."""
        out: dict[str, Any] = {"xy": 1}
        if self.updates == 0:
            out.update(id=job.get("id"), started=job.get("started"))
        self.updates += 1
        if job.get("state") != self.state:
            self.state = out["state"] = job.get("state")
            if job.get("until"):
                out["until"] = job["until"]
        if job.get("server") and not self.server_sent:
            self.server_sent, out["server"] = True, job["server"]
        out.update({k: job[k] for k in LIVE_KEYS if job.get(k)})
        if job.get("redraw") and job["redraw"] != self.redraw:
            self.redraw = out["redraw"] = job["redraw"]
            out.update({k: job[k] for k in ("table", "html") if job.get(k)})
        out["progress"] = job.get("progress") or 0
        return out


def _final(job: dict[str, Any] | None, job_id: str) -> dict[str, Any]:
    if job is None:
        return {"xy": 1, "error": True, "code": 1, "description": f"Failed to load job data: {job_id}"}
    out = {"xy": 1, **{k: job.get(k) for k in ("id", "code", "description", "completed", "elapsed")}}
    out.update({k: job[k] for k in FINAL_EXTRAS if job.get(k)})
    return out


async def _send_output(resp: web.StreamResponse, watch: _Watch, chunks: AsyncIterator[bytes], *, last: bool) -> None:
    """`log` events for `chunks` (the output from watch.offset on), whole UTF-8 characters each; a character cut
    off at the end waits for the rest unless this is the `last` output (then it is sent as it is)."""
    held = b""
    async for chunk in chunks:
        held += chunk
        while len(held) >= FRAME_BYTES:
            n = utf8_cut(held[:FRAME_BYTES]) or FRAME_BYTES
            await _frame(resp, watch, held[:n])
            held = held[n:]
    n = len(held) if last else utf8_cut(held)
    if n:
        await _frame(resp, watch, held[:n])


async def _frame(resp: web.StreamResponse, watch: _Watch, data: bytes) -> None:
    start = watch.offset
    watch.offset += len(data)
    await resp.write(_sse("log", {"offset": start, "text": data.decode("utf-8", "replace")}, watch.offset))


async def _live_range(call: Call, job_id: str, start: int, end: int) -> AsyncIterator[bytes]:
    for at in range(start, end, CHUNK):
        piece = await call.stores.logs.read(job_id, at, min(at + CHUNK, end))
        if not piece:
            return
        yield piece


async def _skip(chunks: AsyncIterator[bytes], count: int) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0


async def _rest(call: Call, job_id: str, offset: int) -> AsyncIterator[bytes]:
    """Output from `offset` on once the job is complete: still live until the log has been moved (the live log
    goes only after the stored one is in place), stored after; both hold the same bytes at the same offsets."""
    size = await call.stores.logs.size(job_id)
    source = (_live_range(call, job_id, offset, size) if size
              else _skip(inflate(call.stores.files.read(log_path(job_id))), offset))  # fmt: skip
    async for chunk in source:
        yield chunk


def _resume_offset(call: Call) -> int:
    offset = call.params.get("offset")
    if offset is not None:
        return int(offset)
    last = call.request.headers.get("Last-Event-ID", "").strip()
    return int(last) if last.isdigit() and len(last) < 16 and int(last) <= MAX_OFFSET else 0


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _follow(call: Call, resp: web.StreamResponse, watch: _Watch, job: dict[str, Any] | None) -> None:
    job_id = call.params["id"]
    deadline = time.monotonic() + STREAM_MAX_S
    tick = 0
    while job is not None and not _complete(job):
        size = await call.stores.logs.size(job_id)
        if size > watch.offset:
            await _send_output(resp, watch, _live_range(call, job_id, watch.offset, size), last=False)
        if tick % UPDATE_EVERY == 0:
            await resp.write(_sse("update", watch.update(job)))
        if time.monotonic() > deadline or _gone(call.request):
            return  # no `end`: the client may resume from the last `log` id
        await asyncio.sleep(TICK_S)
        tick += 1
        if tick % UPDATE_EVERY == 0:  # the record once a second (it can be large); the log's length every tick
            job = await call.stores.jobs.get(job_id)
    await _send_output(resp, watch, _rest(call, job_id, watch.offset), last=True)
    await resp.write(_sse("update", _final(job, job_id)))
    await resp.write(_sse("end", {}))


RESUME = integer("offset", None, ge=0, le=MAX_OFFSET, doc="output byte offset to resume from (or Last-Event-ID)")


STREAM_TOKEN = text("token", max_len=64, pattern=r"[0-9a-f]+", doc="a magic link's `stream` token, instead of auth")


async def _stream_caller(call: Call) -> dict[str, Any]:
    """The job, for a caller with a magic link's stream token (sha256_hex('stream' + id + secret), any job it
    names) or, as every other read, a session or API key that can see the job."""
    job_id = call.params["id"]
    if call.params.get("token"):
        if not same(call.params["token"], sha256_hex("stream" + job_id + call.stores.secret_key)):
            raise ApiError("api", "Authentication failed.")
        job = await call.stores.jobs.get(job_id)
        if job is None:
            raise ApiError("notfound", f"Failed to locate job: {job_id}")
        return job
    call.user = await call.authenticator.authenticate(call, AUTH, write=False)
    return await _visible_job(call, job_id)


@HANDLERS.add("stream_job", write=False, privilege=NONE, args=(JOB_ID, RESUME, STREAM_TOKEN))
async def stream_job(call: Call) -> web.StreamResponse:
    """Server-Sent Events: `start`, `update` every second while the job runs, `log` events {offset, text} with
    its output as it arrives (each with the offset after it as its id), a final `update` and `end`. Needs a
    session or API key, or a magic link's `token`."""
    job = await _stream_caller(call)
    resp = web.StreamResponse(headers=stream_headers(call, {
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}))
    await resp.prepare(call.request)
    try:
        await resp.write(_sse("start", {}))
        await _follow(call, resp, _Watch(_resume_offset(call)), job)
        await resp.write_eof()
    except ConnectionResetError:
        log.debug("stream_job_client_left", job=call.params["id"])
    except Exception as exc:
        log.warning("stream_job_failed", job=call.params["id"], error=repr(exc))
        resp.force_close()
    return resp
