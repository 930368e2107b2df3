"""Where the command line client finds its nodes and credentials: flags, then the environment, then a TOML file.

The file (`--config PATH`, else $PODIUM_CONFIG, else ~/.config/podium/client.toml) may hold:

    url = ["http://node1:5522", "http://node2:5522"]   # or one comma-separated string
    api_key = "..."
    username = "..."   # a session login instead of an API key
    password = "..."
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import split_urls

DEFAULT_URL = "http://127.0.0.1:5522"


class ConfigError(Exception):
    """A bad option, variable or config file entry; the message names it."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    urls: list[str]
    api_key: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def options(self) -> dict[str, Any]:
        # The command line follows the primary the given nodes name even when it is not listed (one URL is enough
        # there); the library does so only when asked.
        return {"api_key": self.api_key, "username": self.username, "password": self.password, "discover": True}


def default_path(env: Mapping[str, str]) -> Path:
    if env.get("PODIUM_CONFIG"):
        return Path(env["PODIUM_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "podium" / "client.toml"


def _read_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"--config {str(path)!r}: no such file") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}") from None
    unknown = sorted(set(data) - {"url", "api_key", "username", "password"})
    if unknown:
        raise ConfigError(f"config file {str(path)!r}: unknown key {unknown[0]!r}")
    for key in ("api_key", "username", "password"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"config file {str(path)!r}: {key!r} must be a string")
    if "url" in data and not (isinstance(data["url"], str)
                              or (isinstance(data["url"], list) and all(isinstance(u, str) for u in data["url"]))):
        raise ConfigError(f"config file {str(path)!r}: 'url' must be a string or a list of strings")
    return data


def load(urls: Sequence[str] | None, api_key: str | None, config: str | None, env: Mapping[str, str]) -> ClientConfig:
    """Each setting from the first place that has it: flag, environment variable, config file."""
    path = Path(config) if config else default_path(env)
    data = _read_file(path, explicit=bool(config))
    where = "--url"
    raw: str | Sequence[str] | None = list(urls) if urls else None
    if raw is None and env.get("PODIUM_URL"):
        raw, where = env["PODIUM_URL"], "PODIUM_URL"
    if raw is None and "url" in data:
        raw, where = data["url"], f"config file {str(path)!r} 'url'"
    try:
        found = split_urls(raw if raw is not None else DEFAULT_URL)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not found:
        raise ConfigError(f"{where}: no node URL given")
    return ClientConfig(
        urls=found,
        api_key=api_key or env.get("PODIUM_API_KEY") or data.get("api_key") or None,
        username=env.get("PODIUM_USERNAME") or data.get("username") or None,
        password=env.get("PODIUM_PASSWORD") or data.get("password") or None,
    )
