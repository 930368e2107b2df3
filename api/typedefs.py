"""Every aiohttp AppKey in one place (avoids import cycles between the app factory and handlers)."""

from __future__ import annotations

from aiohttp import web

from cluster.node import NodeRuntime

from .auth import Authenticator
from .registry import Registry
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
NODE = web.AppKey("node", NodeRuntime)
REGISTRY = web.AppKey("registry", Registry)
AUTH = web.AppKey("auth", Authenticator)
