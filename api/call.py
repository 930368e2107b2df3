"""What a handler receives: the parsed request and the node it runs on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cluster.node import NodeRuntime
from storage.stores import Stores

from .principal import Principal
from .settings import Settings

if TYPE_CHECKING:
    from .auth import Authenticator

CLIENT_IP_HEADER = "X-Podium-Client-IP"  # a handed-on call's caller (trusted on the node's private socket only)


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
    user: Principal | None = None  # set by the transport for every handler that needs auth
    # What `stores` answers instead of the node's (an import's dry run sees the objects it would have written).
    stores_view: Stores | None = None
    # The node's authenticator (handlers that check a credential of their own); set by the transport.
    auth: Authenticator | None = None

    @property
    def who(self) -> Principal:
        """The authenticated caller (handlers that declare a privilege always have one)."""
        assert self.user is not None, "handler declared no privilege but asked who is calling"
        return self.user

    @property
    def authenticator(self) -> Authenticator:
        assert self.auth is not None, "a call built outside the transport has no authenticator"
        return self.auth

    @property
    def stores(self) -> Stores:
        return self.stores_view if self.stores_view is not None else self.node.stores

    @property
    def ip(self) -> str:
        remote = self.request.remote
        if remote:
            return remote
        # Only the node's private socket (0600) has no peer address: a worker's call handed on (api/workers.py).
        return self.request.headers.get(CLIENT_IP_HEADER, "")
