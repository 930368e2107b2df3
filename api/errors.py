"""API errors, raised anywhere in a handler and rendered once by the transport."""

from __future__ import annotations

from typing import Any

# HTTP status per error code (seed). Any other non-zero code answers 500.
STATUS: dict[str, int] = {
    "api": 400,
    "session": 401,
    "access": 403,
    "notfound": 404,
    "rate": 429,
    "master": 500,
    "login": 401,  # a failed login is the caller's mistake, not a server error (xyOps answers 200)
}

MASTER_DESCRIPTION = "This API call can only be invoked on the primary conductor server."
NO_PRIMARY_DESCRIPTION = (
    "This API call can only be invoked on the primary conductor server, and no primary is elected right now."
)


class ApiError(Exception):
    """An error reply: `code` + `description`, optional extra keys and an explicit HTTP status."""

    def __init__(self, code: str, description: str, *, status: int | None = None, **extra: Any) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status if status is not None else STATUS.get(code, 500)
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "description": self.description, **self.extra}


def master_error(host: str, url: str) -> ApiError:
    """The seed's redirect hint: where the primary is, or empty fields when nobody is primary."""
    return ApiError("master", MASTER_DESCRIPTION if host else NO_PRIMARY_DESCRIPTION, host=host, url=url)


def bad_param(field: str, problem: str) -> ApiError:
    return ApiError("api", f"Parameter '{field}' {problem}.")
