"""What runs a job: a process spawned from the job's command, or a built-in plugin inside the agent.

Both look the same to the runner: `run()` feeds the job's stdout and stderr to a `Sink` and returns an exit
status once the work is over and its output has ended; `signal()` stops it. A process plugin owns a process
group (`start_new_session`), so `all` can reach every process the job started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

READ_SIZE = 64 * 1024


class Sink(Protocol):
    """Where a plugin's output goes: stdout is parsed for records, stderr and text are log text."""

    def stdout(self, data: bytes) -> None: ...

    def stderr(self, data: bytes) -> None: ...

    def record(self, record: dict[str, Any]) -> None: ...

    def meta(self, text: str) -> None: ...

    def spawned(self, pid: int) -> None: ...


@dataclass
class Launch:
    """Everything a plugin needs to run one job."""

    job: dict[str, Any]
    stdin: bytes  # the one JSON line the plugin reads
    env: dict[str, str]
    cwd: Path
    temp_dir: Path  # the agent's data dir: scripts live here, never in the job's cwd
    base_url: str
    secrets: Mapping[str, Any] = field(default_factory=dict)
    user: int | None = None  # set only when the job runs as another account
    group: int | None = None
    extra_groups: list[int] | None = None  # that account's groups, not the agent's

    @property
    def params(self) -> dict[str, Any]:
        params = self.job.get("params")
        return params if isinstance(params, dict) else {}


class Plugin(ABC):
    """One job's work. `pid` is 0 for a built-in that runs inside the agent."""

    pid: int = 0

    @abstractmethod
    async def run(self, launch: Launch, sink: Sink) -> int:
        """Do the work; the exit status (negative: killed by that signal)."""

    @abstractmethod
    def signal(self, signum: int, everything: bool) -> None:
        """Deliver a signal to the job's process (or every process of the job when `everything`)."""

    def alive(self, everything: bool) -> bool:
        """Whether anything the signal would reach is still running."""
        return False


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # a zombie has already exited
    except psutil.Error:
        return True


class ProcessPlugin(Plugin):
    """A job's command as a process of its own, in a new session (its own process group)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.process: asyncio.subprocess.Process | None = None
        self._known: set[int] = set()  # descendants seen when a signal went out (they may leave the group)

    async def spawn(self, launch: Launch, sink: Sink, argv: Sequence[str] | None = None) -> asyncio.subprocess.Process:
        extra: dict[str, Any] = {}
        if launch.user is not None:
            extra["user"] = launch.user
        if launch.group is not None:
            extra["group"] = launch.group
        if launch.extra_groups is not None:
            extra["extra_groups"] = launch.extra_groups
        self.process = await asyncio.create_subprocess_exec(
            *(argv or self.argv), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=launch.cwd, env=launch.env, start_new_session=True,
            **extra,
        )  # fmt: skip
        self.pid = self.process.pid
        sink.spawned(self.pid)
        return self.process

    async def run(self, launch: Launch, sink: Sink) -> int:
        process = await self.spawn(launch, sink)
        await self.feed_stdin(process, launch.stdin)
        await self.pump(process, sink.stdout, sink.stderr)
        return await process.wait()

    @staticmethod
    async def feed_stdin(process: asyncio.subprocess.Process, data: bytes) -> None:
        stdin = process.stdin
        assert stdin is not None
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.write(data)
                await stdin.drain()
        finally:  # also when the job is aborted meanwhile: an open pipe left to the GC warns after its loop closed
            stdin.close()

    @staticmethod
    async def pump(process: asyncio.subprocess.Process, out: Any, err: Any) -> None:
        """Copy stdout and stderr to `out` and `err` until both end."""

        async def copy(stream: asyncio.StreamReader | None, to: Any) -> None:
            assert stream is not None
            while chunk := await stream.read(READ_SIZE):
                to(chunk)

        await asyncio.gather(copy(process.stdout, out), copy(process.stderr, err))

    def signal(self, signum: int, everything: bool) -> None:
        if not self.pid:
            return
        if everything:
            with contextlib.suppress(psutil.Error):
                self._known.update(p.pid for p in psutil.Process(self.pid).children(recursive=True))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
            for pid in self._known:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)
        elif self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def alive(self, everything: bool) -> bool:
        if self.process is not None and self.process.returncode is None and not _gone(self.pid):
            return True
        if not everything:
            return False
        if any(not _gone(pid) for pid in self._known):
            return True
        try:
            os.killpg(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return any(not _gone(p.pid) for p in _group_members(self.pid))


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
    return members


class BuiltinPlugin(Plugin):
    """A plugin that runs as a task inside the agent; a signal cancels it (SIGTERM and SIGKILL alike)."""

    def __init__(self) -> None:
        self._task: asyncio.Task[int] | None = None
        self._signalled = 0

    @abstractmethod
    async def work(self, launch: Launch, sink: Sink) -> int:
        """The plugin's own work; the exit status."""

    async def run(self, launch: Launch, sink: Sink) -> int:
        self._task = asyncio.ensure_future(self.work(launch, sink))
        try:
            return await self._task
        except asyncio.CancelledError:
            if self._signalled and self._task.cancelled():
                return -self._signalled
            raise

    def signal(self, signum: int, everything: bool) -> None:
        if self._task is not None and not self._task.done():
            self._signalled = signum
            self._task.cancel()

    def alive(self, everything: bool) -> bool:
        return self._task is not None and not self._task.done()


def signal_name(status: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(-status).name
    return f"signal {-status}"


def say(sink: Sink, text: str) -> None:
    """One line of log text from a built-in plugin (on its stdout, as a plugin process would print it)."""
    sink.stdout((text + "\n").encode())
