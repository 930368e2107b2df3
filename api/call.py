"""What a handler receives: the parsed request and the node it runs on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cluster.node import NodeRuntime

from .settings import Settings


@dataclass(frozen=True, slots=True)
class Upload:
    """An uploaded file, spooled to a temporary file (xyOps `files` entry shape)."""

    path: str
    type: str
    name: str
    size: int


@dataclass(slots=True)
class Call:
    request: web.Request
    node: NodeRuntime
    settings: Settings
    request_id: str
    params: dict[str, Any]
    query: dict[str, str]
    tail: str = ""
    files: dict[str, Upload] = field(default_factory=dict)
    # Credentials and transport flags stripped from params (api_key, session_id, csrf_token, ...).
    body_reserved: dict[str, Any] = field(default_factory=dict)
    query_reserved: dict[str, Any] = field(default_factory=dict)
