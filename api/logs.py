"""structlog set-up: one pipeline for our events, aiohttp's access log and any stdlib logger."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(fmt: str = "auto", level: str = "info") -> None:
    """JSON unless on a terminal (or told otherwise); everything to stdout."""
    console = sys.stdout.isatty() if fmt == "auto" else fmt == "console"
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer()
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if not console:
        final.append(structlog.processors.dict_tracebacks)
    final.append(renderer)
    formatter = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=_SHARED, processors=final)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


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
        return self.logger.isEnabledFor(logging.INFO)
