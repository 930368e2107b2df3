"""Real processes for tests: a Redis-compatible server and `podium serve` nodes, on free loopback ports."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from storage.embedded import find_binary

ROOT = Path(__file__).resolve().parent.parent


# Ports come from a block per pytest-xdist worker below the kernel's ephemeral range (32768+), so neither
# another worker nor an outgoing connection can take a port between its choice and the server's bind.
_PORT_BLOCK = 2000
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_PORT_BASE = 20000 + _PORT_BLOCK * (_WORKER % 6)  # 20000-31999
_next_port = itertools.count()


def free_port() -> int:
    """A loopback TCP port nothing listens on now, never handed out twice by this process in a row."""
    for _ in range(_PORT_BLOCK):
        port = _PORT_BASE + next(_next_port) % _PORT_BLOCK
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {_PORT_BASE}-{_PORT_BASE + _PORT_BLOCK - 1}")


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A process of the suite, its output appended to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


class RedisServer:
    """A valkey-server on a TCP loopback port with AOF in `directory`; restartable on the same port.
    `args`: more server options (as `--replicaof 127.0.0.1 PORT`)."""

    def __init__(self, directory: Path, port: int | None = None, args: Sequence[str] = ()) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [
            find_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--appendonly", "yes", "--save", "",
            "--logfile", str(self.directory / "server.log"), *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class SentinelStore:
    """A master, one replica of it and three sentinels watching them as `service`, all valkey-server on
    loopback; `url` is what a node is given (`redis+sentinel://...`)."""

    def __init__(self, directory: Path, service: str = "mymaster", down_after_ms: int = 1000) -> None:
        self.directory = directory
        self.service = service
        self.down_after_ms = down_after_ms
        fast_sync = ["--repl-diskless-sync-delay", "0"]  # a replica (also an old master rejoining) syncs at once
        self.master = RedisServer(directory / "master", args=fast_sync)
        replica_port = free_port()
        while replica_port == self.master.port:
            replica_port = free_port()
        self.replica = RedisServer(directory / "replica", replica_port,
                                   args=[*fast_sync, "--replicaof", "127.0.0.1", str(self.master.port)])  # fmt: skip
        taken = {self.master.port, self.replica.port}
        self.sentinel_ports: list[int] = []
        while len(self.sentinel_ports) < 3:  # free_port may hand out one port twice while nothing binds it
            port = free_port()
            if port not in taken:
                taken.add(port)
                self.sentinel_ports.append(port)
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self) -> SentinelStore:
        self.master.start()
        self.replica.start()
        for i, port in enumerate(self.sentinel_ports):
            where = self.directory / f"sentinel{i}"
            where.mkdir(parents=True, exist_ok=True)
            conf = where / "sentinel.conf"  # a sentinel rewrites its own config file: one each
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {where}", f"logfile {where / 'sentinel.log'}",
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2",
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                f"sentinel failover-timeout {self.service} 10000", "",
            ]))  # fmt: skip
            cmd = [find_binary(), str(conf), "--sentinel"]
            self.sentinels.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
        return self

    def stop(self) -> None:
        """Stops every process it started, also when one of them does not end in time."""
        try:
            for proc in self.sentinels:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(10)
        finally:
            self.sentinels = []
            try:
                self.replica.stop()
            finally:
                self.master.stop()


class S3Server:
    """An S3-compatible server (moto's) on a loopback port, in its own process, for the S3 file store.
    It keeps everything in memory and takes any credentials; `env` gives them to clients (boto's variables)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "podium-test", "AWS_SECRET_ACCESS_KEY": "podium-test-secret",
                "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip

    def start(self, timeout: float = 30.0) -> S3Server:
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = spawn(cmd, {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}, self.directory / "s3.log")
        deadline = time.monotonic() + timeout
        while True:  # listening is not enough: wait until it answers
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the S3 server on port {self.port} did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class S3Bucket:
    """A fresh bucket on an S3Server, looked at with a plain client from outside any store."""

    def __init__(self, server: S3Server) -> None:
        self.server = server
        self.name = f"podium-{secrets.token_hex(6)}"

    def client(self) -> Any:
        from aiobotocore.session import get_session  # botocore loads slowly: only in tests that use S3

        return get_session().create_client("s3", endpoint_url=self.server.url, region_name="us-east-1",
                                           aws_access_key_id=self.server.env["AWS_ACCESS_KEY_ID"],
                                           aws_secret_access_key=self.server.env["AWS_SECRET_ACCESS_KEY"])  # fmt: skip

    async def create(self) -> S3Bucket:
        async with self.client() as s3:
            await s3.create_bucket(Bucket=self.name)
        return self

    async def keys(self) -> list[str]:
        async with self.client() as s3:
            found: list[str] = []
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.name):
                found += [item["Key"] for item in page.get("Contents", [])]
            return sorted(found)

    async def get(self, key: str) -> bytes:
        async with self.client() as s3:
            reply = await s3.get_object(Bucket=self.name, Key=key)
            async with reply["Body"] as body:
                return bytes(await body.read())

    async def uploads(self) -> list[str]:
        """Multipart uploads begun and neither completed nor aborted."""
        async with self.client() as s3:
            reply = await s3.list_multipart_uploads(Bucket=self.name)
            return [upload["Key"] for upload in reply.get("Uploads", [])]


class Node:
    """One `podium serve` process."""

    def __init__(
        self, index: int, directory: Path, redis_url: str | None, extra: Sequence[str] = (),
        host: str = "127.0.0.1", port: int | None = None, env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.index = index
        self.directory = directory
        self.redis_url = redis_url
        self.extra = list(extra)
        self.host = host
        self.port = port or free_port()
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "node.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def node_id(self) -> str:
        return (self.directory / "data" / "node_id").read_text().strip()

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(self.directory / "data"),
               "--bind", f"{self.host}:{self.port}", "--log-format", "json", *self.extra]  # fmt: skip
        if self.redis_url:
            cmd += ["--redis", self.redis_url]
        return cmd

    def start(self, env: dict[str, str] | None = None) -> Node:
        self.directory.mkdir(parents=True, exist_ok=True)
        # No agent unless a test asks for one (PODIUM_AGENT=on): most tests want jobs that find no server.
        # One HTTP process per node unless a test asks for more (PODIUM_WORKERS): the suite runs many nodes at once.
        environ = {**os.environ, "PODIUM_TEST_HOOKS": "1", "PODIUM_AGENT": "off", "PODIUM_WORKERS": "1",
                   "PYTHONPATH": str(ROOT), **self.env, **(env or {})}  # fmt: skip
        self.proc = spawn(self.command(), environ, self.log_path)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            os.kill(self.pid, sig)

    def kill9(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def terminate(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        self.resume()
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    """A Redis server plus N nodes; every process it starts it also stops."""

    def __init__(self, root: Path, size: int = 3, extra: Sequence[str] = (), *, env: dict[str, str] | None = None,
                 hosts: Sequence[str] = (), sentinel: SentinelStore | None = None) -> None:  # fmt: skip
        """`hosts`: one loopback address per node, all on one port (as xySat needs: it follows a redirect
        to another host on its own port). `sentinel`: the store is that Sentinel set (`redis` is its first
        master) and the nodes reach it through the sentinels."""
        self.root = root
        self.sentinel = sentinel
        self.redis = sentinel.master if sentinel is not None else RedisServer(root / "redis")
        url = sentinel.url if sentinel is not None else self.redis.url
        port = free_port() if hosts else None
        self.nodes = [Node(i, root / f"node{i}", url, extra, host=hosts[i] if hosts else "127.0.0.1",
                           port=port, env=env) for i in range(size)]  # fmt: skip
        if sentinel is not None:  # five store ports, none bound yet: keep the nodes off them
            taken = {sentinel.master.port, sentinel.replica.port, *sentinel.sentinel_ports}
            for node in self.nodes:
                while node.port in taken:
                    node.port = free_port()
                taken.add(node.port)
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Cluster:
        if self.sentinel is not None:
            self.sentinel.start()
        else:
            self.redis.start()
        for node in self.nodes:
            node.start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.terminate()
        if self.sentinel is not None:
            self.sentinel.stop()
        else:
            self.redis.stop()
        if self.http is not None:
            await self.http.close()

    async def health(self, node: Node) -> tuple[int, dict[str, Any]] | None:
        assert self.http is not None
        try:
            async with self.http.get(node.url + "/health", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                return resp.status, await resp.json()
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def call(
        self, node: Node, api: str, /, method: str = "GET", **params: Any
    ) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        url = f"{node.url}/api/app/{api}/v1"
        if method == "GET":
            async with self.http.get(url, params={k: str(v) for k, v in params.items()}) as resp:
                return resp.status, await resp.json()
        async with self.http.post(url, json=params) as resp:
            return resp.status, await resp.json()

    async def primaries(self, nodes: Sequence[Node] | None = None) -> list[Node]:
        found = []
        for node in nodes or self.nodes:
            if node.running:
                h = await self.health(node)
                if h is not None and h[0] == 200:
                    found.append(node)
        return found

    async def wait_for(self, predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
        """Poll an async predicate until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = await predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(interval)

    async def wait_single_primary(self, timeout: float = 30.0, nodes: Sequence[Node] | None = None) -> Node:
        async def one() -> Node | None:
            found = await self.primaries(nodes)
            return found[0] if len(found) == 1 else None

        node: Node = await self.wait_for(one, timeout)
        return node

    async def wait_all_up(self, timeout: float = 30.0) -> None:
        async def up() -> bool:
            return all([await self.health(n) is not None for n in self.nodes if n.running])

        await self.wait_for(up, timeout)

    async def ready(self, timeout: float = 30.0) -> Node:
        """Every node answers and one of them is primary (returned)."""
        await self.wait_all_up(timeout)
        return await self.wait_single_primary(timeout)

    async def post(self, node: Node, api: str, body: dict[str, Any] | None = None, *, ns: str = "app",
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
        """POST a JSON body to `/api/<ns>/<api>/v1` on `node`: (HTTP status, reply)."""
        assert self.http is not None
        async with self.http.post(f"{node.url}/api/{ns}/{api}/v1", json=body or {}, headers=headers or {}) as resp:
            data: dict[str, Any] = await resp.json()
            return resp.status, data

    async def admin_session(self, node: Node | None = None, timeout: float = 30.0) -> dict[str, str]:
        """Headers of an admin session, logged in on `node` (default: whichever node is primary at each
        attempt), retried while the first start or a failover is still under way."""
        assert self.http is not None
        http = self.http

        async def logged_in() -> str | None:
            target = node or await self.wait_single_primary(timeout)
            try:
                async with http.post(f"{target.url}/api/user/login/v1",
                                     json={"username": "admin", "password": "admin"}) as resp:  # fmt: skip
                    cookie = resp.cookies.get("session_id")
                    return cookie.value if resp.status == 200 and cookie is not None else None
            except aiohttp.ClientError:
                return None

        sid: str = await self.wait_for(logged_in, timeout, interval=0.2)
        http.cookie_jar.clear()  # every later call names its session explicitly
        return {"X-Session-ID": sid}


class AgentProcess:
    """One `podium agent` process with a per-server token (derived here from the cluster secret)."""

    def __init__(self, directory: Path, urls: Sequence[str], server_id: str, token: str,
                 extra: Sequence[str] = ()) -> None:  # fmt: skip
        self.directory = directory
        self.urls = list(urls)
        self.server_id = server_id
        self.token = token
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "agent.log"

    def command(self) -> list[str]:
        urls = [arg for url in self.urls for arg in ("--url", url)]
        return [sys.executable, "-m", "api.cli", "agent", *urls, "--server-id", self.server_id,
                "--data-dir", str(self.directory / "data"), *self.extra]  # fmt: skip

    def start(self) -> AgentProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        environ = {**os.environ, "PYTHONPATH": str(ROOT), "PODIUM_AGENT_TOKEN": self.token}
        self.proc = spawn(self.command(), environ, self.log_path)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> None:
        if self.proc is None or not self.running:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
