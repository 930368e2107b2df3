"""A plugin's stdout, as the xySat protocol reads it: NDJSON records mixed with log text.

A line is a protocol record when it looks like one JSON object (`^\\s*\\{.+\\}\\s*$`), parses, and has a truthy
`xy`; every other line (JSON without `xy` included) is log text, as is everything on stderr. Records are
merged into the job the way xySat merges them:

- a record with a top-level `type` or `state` is ignored (most likely the job printed back);
- `complete` without `code` means `code` 0, and a `code` means `complete`;
- `data`, `serverData` and `workflowData` are held apart and merged with array concatenation, to be sent
  with the final update only; a value that is not an object is dropped with a warning;
- `push` must be an object of `\\w+` keys with array values (else it is dropped with a warning); several
  pushes are concatenated key by key, and `push.files` joins the job's `files`;
- everything else is merged shallowly into the job, and `redraw` is set when what a page shows changed.

Lines are bounded: a line longer than `max_line` is passed on as log text in pieces, never parsed, so a
plugin cannot make the agent hold an unbounded line in memory.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 32 * 1024 * 1024  # xySat's limit on one stdout line
_RECORD = re.compile(rb"^\s*\{.+\}\s*$", re.DOTALL)
_PUSH_KEY = re.compile(r"\w+", re.ASCII)
HELD = ("data", "serverData", "workflowData")  # sent with the final update only
_REDRAW = ("table", "html", "markdown", "text", "perf")


class LineSplitter:
    """Bytes in, whole lines out (each with its newline); a line past `max_line` comes out in pieces."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, bool]]:
        """(line, whole) pairs: `whole` is False for a piece of an overlong line, which is only ever log text."""
        self._buffer += chunk
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) >= self.max_line:
                    piece = bytes(self._buffer[: self.max_line])
                    del self._buffer[: self.max_line]
                    yield piece, False
                    continue
                return
            if end + 1 > self.max_line:
                piece = bytes(self._buffer[: self.max_line])
                del self._buffer[: self.max_line]
                yield piece, False
                continue
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            yield line, True

    def close(self) -> Iterator[tuple[bytes, bool]]:
        """What is left when the stream ends (a last line without a newline)."""
        if self._buffer:
            rest = bytes(self._buffer)
            self._buffer.clear()
            yield rest, True


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The protocol record on this line, or None when the line is log text."""
    if not _RECORD.match(line):
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not value.get("xy"):
        return None
    return value


def merge_concat(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Shallow merge where two arrays under the same key are concatenated (xySat's mergeConcatInto)."""
    for key, value in update.items():
        if isinstance(into.get(key), list) and isinstance(value, list):
            into[key] = into[key] + value
        else:
            into[key] = value


@dataclass
class JobOutput:
    """The job as its plugin has reported it so far, plus the held details and the agent's warnings."""

    job: dict[str, Any] = field(default_factory=dict)
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def apply(self, record: dict[str, Any]) -> bool:
        """Merge one record; False when it was ignored (the job is complete, or it looks like the job)."""
        # A job completed or being aborted is not changed by its plugin any more (xySat ignores it too).
        if self.job.get("complete") or self.job.get("code") == "abort" or "type" in record or "state" in record:
            return False
        data = {k: v for k, v in record.items() if k != "xy"}
        if data.get("complete") and not data.get("code"):
            data["code"] = 0
        if "code" in data:
            data["complete"] = True
        self._hold(data)
        push = self._push(data)
        self.job.update(data)
        if push is not None:
            self._merge_push(push)
        if any(data.get(k) for k in _REDRAW) or self.job.get("push") or self.job.get("status"):
            self.job["redraw"] = secrets.token_hex(4)
        return True

    def _hold(self, data: dict[str, Any]) -> None:
        for key in HELD:
            if key not in data:
                continue
            value = data.pop(key)
            if not value:
                continue
            if not isinstance(value, dict):
                self.warnings.append(f"Invalid syntax: Not an object: {key}")
                continue
            merge_concat(self.held.setdefault(key, {}), value)

    def _push(self, data: dict[str, Any]) -> dict[str, list[Any]] | None:
        if "push" not in data:
            return None
        push = data.pop("push")
        if not isinstance(push, dict):
            self.warnings.append("Invalid push syntax: Not an object.")
            return None
        for key, value in push.items():
            if not isinstance(key, str) or not _PUSH_KEY.fullmatch(key):
                self.warnings.append("Invalid push syntax: Invalid key in push object.")
                return None
            if not isinstance(value, list):
                self.warnings.append(f"Invalid push syntax: Property is not an array: {key}")
                return None
        return push

    def _merge_push(self, push: dict[str, list[Any]]) -> None:
        pending: dict[str, list[Any]] = self.job.setdefault("push", {})
        for key, values in push.items():
            if key == "files":  # files pushed by the plugin are the agent's to upload, not the conductor's
                self.job["files"] = [*(self.job.get("files") or []), *values]
            else:
                pending[key] = [*pending.get(key, []), *values]
        if not pending:
            del self.job["push"]
