"""The built-in plugins (`[shell-plugin]`, `[test-plugin]`, ...): they run inside the agent, no interpreter start
per job, and behave to the runner exactly like a process plugin (records, log text, exit status, signals)."""

from __future__ import annotations

from collections.abc import Callable

from ..plugin import Plugin
from .docker import DockerPlugin
from .hook import HookPlugin
from .http import HttpPlugin
from .shell import ShellPlugin
from .test import TestPlugin

BUILTINS: dict[str, Callable[[], Plugin]] = {
    "shell-plugin": ShellPlugin,
    "test-plugin": TestPlugin,
    "http-plugin": HttpPlugin,
    "hook-plugin": HookPlugin,
    "docker-plugin": DockerPlugin,
}

__all__ = ["BUILTINS"]
