"""The whole agent against a scripted conductor peer: handshake, a job's frames and finish, acks, reconnect,
redirect, auth failure, enrolment, and the command line's config errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.cli import main as cli_main
from cluster.agent.link import Link
from cluster.agent.main import AgentConfig, ConfigError, parse, run, serve
from cluster.agent.state import State
from tests.agent_peer import Peer


@asynccontextmanager
async def agent(config: AgentConfig) -> AsyncIterator[asyncio.Task[int]]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop=stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    node = await Peer().start()
    yield node
    await node.stop()


def config_for(peer: Peer, tmp_path: Path, **more: Any) -> AgentConfig:
    return AgentConfig(urls=(peer.url,), token=peer.token, server_id=peer.server_id, data_dir=tmp_path / "a",
                       hostname="box1", **more)  # fmt: skip


def launch(job_id: str, script: str, **job: Any) -> dict[str, Any]:
    return {"job": {"id": job_id, "command": "[shell-plugin]", "params": {"script": script}, "now": 1, **job},
            "details": {"input": {}}, "sec": {"TOKEN_X": "s3cret"}}  # fmt: skip


SCRIPT = """#!/bin/sh
echo "hello from $JOB_ID"
echo 50%
echo report > out.txt
echo '{"xy":1,"files":["*.txt"],"data":{"n":1}}'
"""


async def test_a_job_runs_reports_and_finishes_over_http(peer: Peer, tmp_path: Path) -> None:
    async with agent(config_for(peer, tmp_path)):
        await peer.wait(lambda: peer.joins == 1)
        [hello] = peer.got("hello")
        assert hello["hostname"] == "box1" and hello["id"] == "s1"
        assert hello["info"]["podium"] and hello["info"]["features"] == {"log_offsets": True}
        await peer.send("launch_job", launch("j1", SCRIPT))
        await peer.wait(lambda: "j1" in peer.finished)
    final = peer.finished["j1"]
    assert final["server"] == "s1" and final["auth"] == peer.token
    job = final["job"]
    assert job["code"] == 0 and job["state"] == "complete" and job["progress"] == 1.0
    assert job["data"] == {"n": 1}
    assert peer.logs["j1"].decode() == "hello from j1\n"
    assert job["log_size"] == len(peer.logs["j1"])
    assert [(i, name, body) for i, name, body in peer.uploads] == [("j1", "out.txt", b"report\n")]
    assert job["files"][0]["path"] == "files/jobs/j1/k/out.txt" and job["files"][0]["server"] == "s1"
    updates = [u["j1"] for u in peer.got("jobs") if "j1" in u]
    assert any(u.get("progress") == 0.5 for u in updates)
    assert any(u.get("state") == "finishing" for u in updates)
    assert all("data" not in u for u in updates)  # held until the end
    metas = [m["text"] for m in peer.got("job_meta")]
    assert any(t.startswith("Spawned child process") for t in metas)
    assert not (tmp_path / "a" / "jobs" / "j1").exists()


async def test_echo_and_a_duplicate_launch(peer: Peer, tmp_path: Path) -> None:
    async with agent(config_for(peer, tmp_path)):
        await peer.wait(lambda: peer.joins == 1)
        await peer.send("echo", {"id": "e1", "last_ping_ms": 3})
        await peer.wait(lambda: bool(peer.got("echoback")))
        assert peer.got("echoback") == [{"id": "e1", "last_ping_ms": 3}]
        await peer.send("launch_job", launch("j2", "echo once\n"))
        await peer.send("launch_job", launch("j2", "echo twice\n"))
        await peer.wait(lambda: "j2" in peer.finished)
    assert peer.logs["j2"].decode() == "once\n"


async def test_input_files_are_downloaded_into_the_job_directory(peer: Peer, tmp_path: Path) -> None:
    peer.files["jobs/j0/abc/in.txt"] = b"input body\n"
    async with agent(config_for(peer, tmp_path)):
        await peer.wait(lambda: peer.joins == 1)
        job = launch("j6", "cat data.txt\n")
        job["details"]["input"] = {"files": [{"path": "jobs/j0/abc/in.txt", "filename": "data.txt"}]}
        await peer.send("launch_job", job)
        missing = launch("j7", "echo never\n")
        missing["details"]["input"] = {"files": [{"path": "jobs/none", "filename": "x"}]}
        await peer.send("launch_job", missing)
        await peer.wait(lambda: "j6" in peer.finished and "j7" in peer.finished)
    assert peer.logs["j6"].decode() == "input body\n" and peer.finished["j6"]["job"]["code"] == 0
    failed = peer.finished["j7"]["job"]
    assert failed["code"] == 1 and failed["description"].startswith("Setup Error: Failed to download job file: x")
    assert "j7" not in peer.logs


async def test_after_a_reconnect_unacknowledged_output_is_sent_again(peer: Peer, tmp_path: Path) -> None:
    peer.drop_after_log = True
    script = "#!/bin/sh\necho first\nsleep 1\necho second\n"
    async with agent(config_for(peer, tmp_path)):
        await peer.wait(lambda: peer.joins == 1)
        await peer.send("launch_job", launch("j3", script))
        await peer.wait(lambda: "j3" in peer.finished)
    assert peer.joins == 2
    assert peer.logs["j3"].decode() == "first\nsecond\n"  # complete, no gap, nothing twice
    reattached = [u["j3"] for u in peer.got("jobs") if "j3" in u and "reconnected" in u["j3"]]
    assert reattached


async def test_finish_waits_for_the_log_to_be_acknowledged(peer: Peer, tmp_path: Path) -> None:
    peer.ack = False
    async with agent(config_for(peer, tmp_path)):
        await peer.wait(lambda: peer.joins == 1)
        await peer.send("launch_job", launch("j4", "echo pending\n"))
        await peer.wait(lambda: any(u.get("j4", {}).get("state") == "finishing" for u in peer.got("jobs")))
        await asyncio.sleep(0.3)
        assert "j4" not in peer.finished
        await peer.send("log_ack", {"j4": len(peer.logs["j4"])})
        await peer.wait(lambda: "j4" in peer.finished)


async def test_abort_from_the_conductor(peer: Peer, tmp_path: Path) -> None:
    async with agent(config_for(peer, tmp_path)):
        await peer.wait(lambda: peer.joins == 1)
        await peer.send("launch_job", launch("j5", "echo 10%\nsleep 300\n"))
        await peer.wait(lambda: any(u.get("j5", {}).get("progress") == 0.1 for u in peer.got("jobs")))
        await peer.wait(lambda: any("procs" in u.get("j5", {}) for u in peer.got("jobs")))  # the 1 s tick
        ticked = next(u["j5"] for u in peer.got("jobs") if "procs" in u.get("j5", {}))
        assert ticked["mem"]["count"] >= 1 and ticked["mem"]["current"] > 0 and "cpu" in ticked
        assert str(ticked["pid"]) in ticked["procs"]
        await peer.send("abort_job", {"id": "j5", "reason": "user said so"})
        await peer.wait(lambda: "j5" in peer.finished)
    job = peer.finished["j5"]["job"]
    assert (job["code"], job["description"]) == ("abort", "user said so")


async def test_a_redirect_is_followed(peer: Peer, tmp_path: Path) -> None:
    other = await Peer(redirect_to=peer.url, token=peer.token).start()
    try:
        async with agent(config_for(other, tmp_path)):
            await peer.wait(lambda: peer.joins == 1)
        assert other.joins == 0 and other.got("hello")
    finally:
        await other.stop()


async def test_an_auth_failure_ends_the_agent_with_status_1(peer: Peer, tmp_path: Path) -> None:
    config = AgentConfig(urls=(peer.url,), token="wrong", server_id="s1", data_dir=tmp_path / "a")
    assert await asyncio.wait_for(serve(config, stop=asyncio.Event()), 30) == 1


async def test_enrolment_with_an_api_key_persists_the_identity(peer: Peer, tmp_path: Path) -> None:
    config = AgentConfig(urls=(peer.url,), api_key="good-key", data_dir=tmp_path / "a")
    async with agent(config):
        await peer.wait(lambda: peer.joins == 1)
    path = tmp_path / "a" / "config.json"
    saved = json.loads(path.read_text())
    assert (saved["server_id"], saved["auth_token"]) == ("s1", peer.token)
    assert saved["urls"] == [peer.url]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="enrolment refused"):
        await serve(AgentConfig(urls=(peer.url,), api_key="bad", data_dir=tmp_path / "b"), stop=asyncio.Event())


CASES: list[tuple[list[str], dict[str, str], str]] = [
    ([], {}, "--url"),
    (["--url", "ftp://x", "--token", "t", "--server-id", "s"], {}, "--url 'ftp://x'"),
    (["--url", "http://h:1"], {}, "--api-key or --token"),
    (["--url", "http://h:1", "--token", "t"], {}, "--server-id"),
    (["--url", "http://h:1", "--token", "t", "--api-key", "k"], {}, "give one of them"),
    (["--url", "http://h:1", "--token", "t", "--server-id", "s"], {"PODIUM_AGENT_MAX_JOBS": "x"},
     "PODIUM_AGENT_MAX_JOBS 'x'"),
]


@pytest.mark.parametrize(("argv", "env", "message"), CASES)
def test_config_errors_are_one_line_and_exit_2(argv: list[str], env: dict[str, str], message: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert run([*argv, "--data-dir", str(tmp_path)], env) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "podium agent: error:" in err


def test_options_come_from_the_environment_too() -> None:
    config = parse([], {"PODIUM_AGENT_URL": "http://a:1, https://b:2", "PODIUM_AGENT_TOKEN": "t",
                         "PODIUM_AGENT_SERVER_ID": "s9", "PODIUM_AGENT_MAX_JOBS": "4"})  # fmt: skip
    assert config.urls == ("http://a:1", "https://b:2") and config.token == "t" and config.max_jobs == 4
    assert "token=" not in repr(config)  # the token stays out of logs and tracebacks


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_podium_command_hands_agent_options_to_the_agent(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["agent", "--url", "ftp://nowhere"], {}) == 2
    assert "podium agent: error: --url 'ftp://nowhere'" in capsys.readouterr().err


async def test_podium_agent_as_a_process_joins_runs_a_job_and_stops_on_sigterm(peer: Peer, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT, "PODIUM_AGENT_TOKEN": peer.token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.cli", "agent", "--url", peer.url, "--server-id", peer.server_id,
        "--data-dir", str(tmp_path / "a"), "--log-level", "warning", env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await peer.wait(lambda: peer.joins == 1)
        await peer.send("launch_job", launch("p1", "echo from the process\n"))
        await peer.wait(lambda: "p1" in peer.finished)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert peer.logs["p1"].decode() == "from the process\n"
    assert proc.stderr is not None
    assert peer.token not in (await proc.stderr.read()).decode()


class Quiet:
    """A link handler that only counts."""

    def __init__(self) -> None:
        self.joined_count = 0
        self.dropped = 0

    async def joined(self, data: Mapping[str, Any]) -> None:
        self.joined_count += 1

    def command(self, cmd: str, data: Any) -> None:
        pass

    def disconnected(self) -> None:
        self.dropped += 1


async def test_a_silent_conductor_is_dropped_and_rejoined(peer: Peer, tmp_path: Path) -> None:
    state = State(tmp_path / "config.json", server_id="s1", auth_token=peer.token)
    handler = Quiet()
    async with aiohttp.ClientSession() as session:
        link = Link([peer.url], state, "box", {}, handler, session, idle_timeout=0.3)
        task = asyncio.create_task(link.run())
        await peer.wait(lambda: peer.joins >= 2)  # nothing was sent for 0.3 s: dropped, then joined again
        await link.stop()
        assert await asyncio.wait_for(task, 10) == 0
    assert handler.joined_count >= 2 and handler.dropped >= 1


async def test_retry_reconnects_and_update_config_persists_a_new_token(peer: Peer, tmp_path: Path) -> None:
    async with agent(config_for(peer, tmp_path)):
        await peer.wait(lambda: peer.joins == 1)
        await peer.send("retry", {})
        await peer.wait(lambda: peer.joins == 2)
        peer.token = "rotated-token"
        await peer.send("updateConfig", {"auth_token": "rotated-token"})
        await peer.wait(lambda: json.loads(config_file(tmp_path)).get("auth_token") == "rotated-token")
        await peer.send("launch_job", launch("j8", "echo rotated\n"))
        await peer.wait(lambda: "j8" in peer.finished)  # finish_job is accepted with the new token


def config_file(tmp_path: Path) -> str:
    try:
        return (tmp_path / "a" / "config.json").read_text()
    except FileNotFoundError:
        return "{}"
