"""The agent every `podium serve` runs for its own machine (unless `--no-agent`).

It is the same `podium agent` as anywhere else, started as a child process so job output never competes with
the API's event loop, and it dies with the node (PR_SET_PDEATHSIG). It connects to this node over loopback with
a per-server token the node derives from the cluster secret, passed in the environment (never on a command
line, where `ps` would show it). Its server id is kept in the node's data dir, so the machine stays one server
across restarts. If it exits, it is started again with a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import structlog

from storage.embedded import die_with_parent
from storage.ids import generate_id

from .agentauth import server_token
from .settings import Settings

log = structlog.get_logger("podium.childagent")
SERVER_ID_FILE = "agent_server_id"


def child_server_id(data_dir: Path) -> str:
    path = data_dir / SERVER_ID_FILE
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    value = generate_id("s")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    tmp.replace(path)
    return value


def local_url(settings: Settings, port: int) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


class ChildAgent:
    def __init__(self, settings: Settings, url: str, secret_key: str) -> None:
        self.settings = settings
        self.url = url
        self.server_id = child_server_id(settings.data_dir)
        self._token = server_token(self.server_id, secret_key)
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "api.cli", "agent", "--url", self.url, "--server-id", self.server_id,
                "--data-dir", str(self.settings.data_dir / "agent")]  # fmt: skip

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        pause = 1.0
        # The node's own settings (the cluster secret, the Redis URL) stay out of the agent and its jobs.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
        env["PODIUM_AGENT_TOKEN"] = self._token
        while not self._stopping:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command(), env=env, stdin=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent
            )
            log.info("child_agent_started", pid=self._proc.pid, server=self.server_id)
            code = await self._proc.wait()
            if self._stopping:
                return
            log.warning("child_agent_exited", code=code, restart_in_s=pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
