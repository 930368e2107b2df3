"""Every aiohttp AppKey in one place (avoids import cycles between the app factory and handlers)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from cluster.node import NodeRuntime

from .auth import Authenticator
from .registry import Registry
from .settings import Settings
from .workers import Forwarder

SETTINGS = web.AppKey("settings", Settings)
NODE = web.AppKey("node", NodeRuntime)
REGISTRY = web.AppKey("registry", Registry)
AUTH = web.AppKey("auth", Authenticator)
FORWARD = web.AppKey("forward", Forwarder)


@dataclass(frozen=True, slots=True)
class Api:
    """What every API call needs from the app, looked up once rather than per request."""

    node: NodeRuntime
    settings: Settings
    auth: Authenticator
    registry: Registry
    forward: Forwarder | None = None  # an HTTP worker's way to its node process (api/workers.py)

    @classmethod
    def of(cls, app: web.Application) -> Api:
        return cls(app[NODE], app[SETTINGS], app[AUTH], app[REGISTRY], app.get(FORWARD))
