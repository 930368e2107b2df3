"""What the agent keeps in its data dir: `config.json` with its server id, token and the conductors it learnt.

Written atomically (a temporary file renamed over the old one) with mode 0600: it holds the per-server token.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class State:
    """The agent's persistent identity and what conductors told it."""

    path: Path
    server_id: str = ""
    auth_token: str = field(default="", repr=False)
    hosts: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # from `joined.config` / `updateConfig`

    @classmethod
    def load(cls, data_dir: Path) -> State:
        path = data_dir / "config.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot be read: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: not a JSON object")

        def strings(key: str) -> list[str]:
            value = raw.get(key)
            return [str(v) for v in value][:100] if isinstance(value, list) else []

        config = raw.get("config")
        return cls(path, server_id=str(raw.get("server_id") or ""), auth_token=str(raw.get("auth_token") or ""),
                   hosts=strings("hosts"), urls=strings("urls"),
                   config=config if isinstance(config, dict) else {})  # fmt: skip

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"server_id": self.server_id, "auth_token": self.auth_token, "hosts": self.hosts,
                           "urls": self.urls, "config": self.config}, indent=2)  # fmt: skip
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".config-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
