"""HTTP workers: `podium serve --workers N` answers on one port from N processes.

The process model. The node process (the one started) runs everything a node runs: the election, the registry
heartbeat, the scheduler and every other primary service, the node's own agent, and an HTTP server. It starts N - 1
worker processes (the same command, with PODIUM_WORKER_INDEX set) that run an HTTP server each on the same address
(SO_REUSEPORT: the kernel spreads connections over them) with the node's identity, store and caches (each keeps the
same invalidation bus as any node), and its own agent gateway (agents may use any process: their commands and
reports go through Redis). A worker runs no election: after every round that changes anything the node process
writes `cluster.follower.node_state` as a JSON line to each worker's stdin, so a worker knows the role and epoch at
once; it serves every read, and on the primary makes fenced writes itself (the fence is checked in Redis, so a
worker of a deposed node is refused like the node). The few calls that use a primary service held in the node
process's memory (Handler.service: the job dispatcher, internal jobs, test mail) are handed on over a private Unix
socket in the data directory, and so is a scrape of /metrics: each worker writes its request counts to the data
directory every 2 s, and the node process adds them to its own. A worker that dies is started again (after 1 s,
doubling to 30 s while it keeps dying young); a worker whose node process dies exits (its stdin ends, and the kernel
sends SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import hdrs, web
from yarl import URL

from cluster.follower import FollowedElection, node_state
from cluster.node import NodeRuntime

from .call import CLIENT_IP_HEADER
from .errors import ApiError
from .settings import WORKER_ENV

log = structlog.get_logger("podium.workers")

FORWARD_TIMEOUT_S = 300.0  # a handed-on call may take as long as the call itself (e.g. starting internal jobs)
RESTART_MIN_S, RESTART_MAX_S, HEALTHY_AFTER_S = 1.0, 30.0, 30.0
COUNTS_EVERY_S = 2.0  # how often a worker writes its request counts for the node's /metrics
MAX_COUNTS_BYTES = 16 << 20
_PR_SET_PDEATHSIG = 1
_HOP = frozenset(h.lower() for h in (hdrs.CONNECTION, hdrs.KEEP_ALIVE, hdrs.TRANSFER_ENCODING, hdrs.TE, hdrs.UPGRADE,
                                     hdrs.CONTENT_LENGTH, hdrs.HOST, "proxy-connection", CLIENT_IP_HEADER))  # fmt: skip
_REPLY_SKIP = frozenset({*_HOP, "date", "server"})


def socket_path(data_dir: Path) -> Path:
    """The node process's private socket (0600): calls that need its primary services."""
    return data_dir / "node.sock"


class WorkerPool:
    """The node process's side: start the workers, tell them the role, start again any that dies."""

    def __init__(
        self, node: NodeRuntime, count: int, argv: Sequence[str], env: dict[str, str], data_dir: Path
    ) -> None:
        self.node = node
        self.node_dir = data_dir
        self.count = count
        self.argv = list(argv)
        self.env = env
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._last = b""  # the state line last sent to every worker
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        self.node.on_state = self.broadcast
        for stale in counts_dir(self.node_dir).glob("worker-*.json"):  # a previous run's
            stale.unlink(missing_ok=True)
        self.node.metrics.peers = self.peer_counts
        self._tasks = [asyncio.create_task(self._keep(index)) for index in range(1, self.count)]

    def peer_counts(self) -> list[dict[str, Any]]:
        """The request counts the workers last wrote (for /metrics: the node's figures are all its processes')."""
        found = []
        for index in range(1, self.count):
            path = counts_dir(self.node_dir) / f"worker-{index}.json"
            try:
                if path.stat().st_size <= MAX_COUNTS_BYTES:
                    found.append(orjson.loads(path.read_bytes()))
            except (OSError, ValueError):
                continue
        return found

    def broadcast(self) -> None:
        """Send the node's state to every worker, when it differs from what they were last sent."""
        line = self._state_line()
        if line == self._last or not self.procs:
            return
        self._last = line
        for proc in self.procs.values():
            _send(proc, line)

    def _state_line(self) -> bytes:
        return orjson.dumps(node_state(self.node)) + b"\n"

    async def _keep(self, index: int) -> None:
        pause = RESTART_MIN_S
        while not self._stopping:
            started = time.monotonic()
            await self._run(index)
            if self._stopping:
                return
            if time.monotonic() - started > HEALTHY_AFTER_S:
                pause = RESTART_MIN_S
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX_S)

    async def _run(self, index: int) -> None:
        """Worker `index`, from its start to its exit."""
        env = {**os.environ, **self.env, WORKER_ENV: str(index)}
        try:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "api.cli", *self.argv,
                                                        stdin=asyncio.subprocess.PIPE, env=env,
                                                        start_new_session=True)  # fmt: skip
        except OSError as exc:
            log.error("worker_start_failed", worker=index, error=repr(exc))
            return
        self.procs[index] = proc
        _send(proc, self._state_line())
        code = await proc.wait()
        self.procs.pop(index, None)
        if not self._stopping:
            log.warning("worker_exited", worker=index, pid=proc.pid, returncode=code)

    async def stop(self, timeout: float = 10.0) -> None:
        """Terminate every worker and wait for them together, killing those still there after `timeout`."""
        self._stopping = True
        procs = list(self.procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        if procs:
            await asyncio.wait([asyncio.ensure_future(proc.wait()) for proc in procs], timeout=timeout)
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _send(proc: asyncio.subprocess.Process, line: bytes) -> None:
    stdin = proc.stdin
    if stdin is None or stdin.is_closing():
        return
    if stdin.transport.get_write_buffer_size() > 1 << 20:  # a worker that reads nothing: it is stuck or going
        return
    with contextlib.suppress(ConnectionError, RuntimeError):
        stdin.write(line)


# -- the worker's side -------------------------------------------------------------------------------------


def die_with_parent() -> None:
    """SIGTERM when the node process dies, however it dies (Linux); exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        raise SystemExit(0)


async def follow(node: NodeRuntime, stop: asyncio.Event) -> None:
    """Apply each state line from the node process; its end (the node process is gone) stops the worker."""
    election = node.election
    assert isinstance(election, FollowedElection)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            try:
                election.apply(orjson.loads(line), node.registry.view)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("worker_state_unreadable", error=repr(exc))
    finally:
        log.info("worker_node_gone", node=node.node_id)
        stop.set()


def counts_dir(data_dir: Path) -> Path:
    return data_dir / "metrics"


async def publish_counts(node: NodeRuntime, data_dir: Path, index: int, stop: asyncio.Event) -> None:
    """Write this worker's request counts for its node process's /metrics every COUNTS_EVERY_S (atomically)."""
    folder = counts_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path, tmp = folder / f"worker-{index}.json", folder / f".worker-{index}.tmp"
    while not stop.is_set():
        try:
            tmp.write_bytes(orjson.dumps(node.metrics.counts()))
            tmp.replace(path)
        except OSError as exc:
            log.warning("worker_counts_unwritable", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), COUNTS_EVERY_S)


class Forwarder:
    """Hands a call of a primary service to the node process over its private socket, and its reply back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.path)),
                                                  auto_decompress=False)  # fmt: skip
        body = await request.read()  # bounded by the app's client_max_size, as any body
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers[CLIENT_IP_HEADER] = request.remote or ""
        try:
            async with self._session.request(
                request.method, URL("http://node" + request.raw_path, encoded=True), data=body, headers=headers,
                allow_redirects=False, timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
            ) as resp:  # fmt: skip
                data = await resp.read()
                out = web.Response(body=data, status=resp.status)
                for key, value in resp.headers.items():
                    if key.lower() not in _REPLY_SKIP:
                        out.headers.add(key, value)
                return out
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("worker_forward_failed", path=request.path, error=repr(exc))
            raise ApiError("api", "The node process did not answer this call; try again shortly.", status=503) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
