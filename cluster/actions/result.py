"""What one action did: the result every executor returns, recorded in the job's meta log and its `actions`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_DESCRIPTION = 1024  # characters of the one-line description
MAX_DETAILS = 32 * 1024  # bytes of markdown details (UTF-8)
_CUT = "\n\n(details cut at 32 KB)\n"


def one_line(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """`text` on one line (line breaks and other control characters become spaces), at most `limit` characters."""
    flat = "".join(" " if ch < " " or ch == "\x7f" else ch for ch in str(text))
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def clip_bytes(text: str, limit: int, marker: str = "") -> str:
    """`text` cut so that it and `marker` fit in `limit` UTF-8 bytes (never inside a character)."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    room = max(0, limit - len(marker.encode()))
    return raw[:room].decode(errors="ignore") + marker


@dataclass(slots=True)
class Outcome:
    """The result of one action: `code` 0 when it worked, else a word naming what failed ("email", "webhook",
    "plugin", ...). The description is kept to one line and the details to 32 KB whatever an executor passes."""

    code: int | str = 0
    description: str = ""
    details: str = ""
    elapsed_ms: float = 0.0

    def __post_init__(self) -> None:
        self.description = one_line(self.description)
        self.details = clip_bytes(self.details, MAX_DETAILS, _CUT)

    @property
    def ok(self) -> bool:
        return not self.code

    def record(self) -> dict[str, Any]:
        """The fields stored on the action in the job (xyOps: `action.code`, `description`, `details`, `elapsed_ms`)."""
        return {"code": self.code, "description": self.description, "details": self.details,
                "elapsed_ms": self.elapsed_ms}  # fmt: skip
