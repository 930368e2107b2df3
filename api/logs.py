"""structlog set-up: one processor chain for our events, aiohttp's access log and stdlib loggers.

Our own events (access lines included) go straight from structlog to stdout, without a stdlib
LogRecord per line: an access line per request is on the hot path. Records from stdlib loggers
(aiohttp's server errors, redis-py) are rendered by the same processors through ProcessorFormatter.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

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
    global _level
    _level = _LEVELS.get(level, logging.INFO)
    console = sys.stdout.isatty() if fmt == "auto" else fmt == "console"
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


class AccessLogger(AbstractAccessLogger):
    """aiohttp access lines as structured events (request id comes from the bound contextvars)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        _access.info(
            "access",
            method=request.method,
            path=request.path,
            status=response.status,
            ms=round(time * 1000, 2),
            remote=request.remote,
            bytes=response.body_length,
        )

    @property
    def enabled(self) -> bool:
        return _level <= logging.INFO
