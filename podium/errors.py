"""Errors a call raises: the server's `code` and `description`, one class per code a caller acts on."""

from __future__ import annotations

from typing import Any


class PodiumError(Exception):
    """An error reply (`code` is never 0) or a failure to reach any node (`code` "connection")."""

    def __init__(self, code: str, message: str, *, status: int = 0, reply: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.reply = reply or {}


class BadRequest(PodiumError):
    """`api`: a missing or malformed parameter."""


class AuthError(PodiumError):
    """`session` or `login`: no valid session or API key."""


class AccessDenied(PodiumError):
    """`access`: the caller lacks a privilege."""


class NotFound(PodiumError):
    """`notfound`."""


class RateLimited(PodiumError):
    """`rate`: the API key is over its per-second limit."""


class NoPrimary(PodiumError):
    """`master`: a write found no primary within the failover window."""


class ConnectionFailed(PodiumError):
    """No node answered (code `connection`)."""


_BY_CODE: dict[str, type[PodiumError]] = {
    "api": BadRequest,
    "session": AuthError,
    "login": AuthError,
    "access": AccessDenied,
    "notfound": NotFound,
    "rate": RateLimited,
    "master": NoPrimary,
    "connection": ConnectionFailed,
}


def error_for(reply: dict[str, Any], status: int = 0) -> PodiumError:
    code = str(reply.get("code"))
    return _BY_CODE.get(code, PodiumError)(code, str(reply.get("description", "")), status=status, reply=reply)
