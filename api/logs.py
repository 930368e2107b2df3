"""structlog set-up: one processor chain for our events, aiohttp's access log and stdlib loggers.

Our own events (access lines included) go straight from structlog to stdout, without a stdlib
LogRecord per line: an access line per request is on the hot path. Records from stdlib loggers
(aiohttp's server errors, redis-py) are rendered by the same processors through ProcessorFormatter.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import select
import sys
import time
from collections.abc import Iterator
from time import perf_counter
from typing import Any, TextIO

import orjson
import structlog
import structlog.tracebacks
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

# Tracebacks without frame locals: locals hold request bodies, passwords and keys.
_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_level = logging.INFO


class _NamedWriteLogger(structlog.WriteLogger):
    """A WriteLogger with a name, so `add_logger_name` works as with stdlib loggers."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _factory(*args: Any) -> _NamedWriteLogger:
    return _NamedWriteLogger(sys.stdout, str(args[0]) if args else "podium")


def configure(fmt: str = "auto", level: str = "info") -> None:
    """JSON unless on a terminal (or told otherwise); everything to stdout."""
    global _level, _json_lines
    _level = _LEVELS.get(level, logging.INFO)
    console = sys.stdout.isatty() if fmt == "auto" else fmt == "console"
    _json_lines = not console
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Any] = (
        [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]  # never frame locals
        if console
        else [_TRACEBACKS, structlog.processors.JSONRenderer()]
    )
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(_level),
        logger_factory=_factory,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail]
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_level)


_access = structlog.get_logger("aiohttp.access")
# Where the transport keeps a call's request id and perf_counter start, for its access line.
REQUEST_ID = web.RequestKey("request_id", tuple[str, float])
_json_lines = True  # JSON output: access lines take the buffered fast path below


class _AccessLines:
    """Access lines as JSON, buffered and written in one go at most FLUSH_S later (or at MAX_BUFFER bytes): one
    write and flush per request cost more than the rest of a `ping`. A crash loses at most FLUSH_S of lines."""

    FLUSH_S = 0.1
    MAX_BUFFER = 64 * 1024

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.size = 0
        self.timer: asyncio.TimerHandle | None = None
        self.stamp_second = -1
        self.stamp = ""

    def add(self, fields: dict[str, Any]) -> None:
        now = time.time()
        second = int(now)
        if second != self.stamp_second:  # the ISO stamp's seconds part, formatted once a second
            self.stamp_second = second
            self.stamp = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        fields["timestamp"] = f"{self.stamp}.{int((now - second) * 1e6):06d}Z"
        line = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
        self.pending.append(line)
        self.size += len(line)
        if self.size >= self.MAX_BUFFER:
            self.flush()
        elif self.timer is None:
            try:
                self.timer = asyncio.get_running_loop().call_later(self.FLUSH_S, self.flush)
            except RuntimeError:  # no loop (a test calling log directly): write now
                self.flush()

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.pending:
            return
        data, self.pending, self.size = b"".join(self.pending), [], 0
        try:
            out = sys.stdout.buffer
            for piece in pieces(data):  # the HTTP workers of a node share its stdout (api/workers.py)
                out.write(piece)
                out.flush()
        except (OSError, ValueError, AttributeError):  # stdout closed or not a byte stream: lines are dropped
            pass


def pieces(data: bytes, size: int = select.PIPE_BUF) -> Iterator[bytes]:
    """`data` (whole lines) cut at line ends into writes of at most `size` bytes where a line allows: a write of
    up to PIPE_BUF bytes to a pipe is never interleaved with another process's write, so lines stay whole."""
    start, end = 0, len(data)
    while start < end:
        if end - start <= size:
            yield data[start:]
            return
        cut = data.rfind(b"\n", start, start + size)
        if cut < start:  # one line longer than a write: whole, on its own
            cut = data.find(b"\n", start + size)
            if cut == -1:
                yield data[start:]
                return
        yield data[start : cut + 1]
        start = cut + 1


_lines = _AccessLines()
flush_access_log = _lines.flush  # at shutdown, so the last lines are not lost


class AccessLogger(AbstractAccessLogger):
    """aiohttp access lines as structured events: JSON through the buffered writer, else (a terminal) through
    structlog's console renderer. Fields: method, path (never the query: it may hold an API key), status, ms,
    remote, bytes, request_id."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid, began = request.get(REQUEST_ID) or (None, 0.0)
        if began:  # an API call: timed by the transport (uvloop's clock, which aiohttp uses, ticks in ms)
            time = perf_counter() - began
        if not _json_lines:
            _access.info("access", method=request.method, path=request.path, status=response.status,
                         ms=round(time * 1000, 2), remote=request.remote, bytes=response.body_length)  # fmt: skip
            return
        _lines.add({
            "method": request.method, "path": request.path, "status": response.status, "ms": round(time * 1000, 2),
            "remote": request.remote, "bytes": response.body_length, "request_id": rid, "event": "access",
            "level": "info", "logger": "aiohttp.access",
        })  # fmt: skip

    @property
    def enabled(self) -> bool:
        return _level <= logging.INFO
