"""The whole agent against real `podium serve` nodes: a job that runs, reports and finishes; echo keep-alive;
input files; output sent again with no gap after the node holding the socket dies; finish after the log is
acknowledged; abort from the conductor; auth failure; enrolment with an API key; the `podium agent` process.

A few frames a Podium node never sends its own agent (redirect, retry, updateConfig, silence, a duplicate launch
on demand) are tested against the scripted peer of tests/agent_peer.py (its docstring says why each is there).
The command line's config errors need no conductor at all.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.agentconn import SILENT_TIMEOUT_S
from api.cli import main as cli_main
from cluster.agent.link import Link
from cluster.agent.main import AgentConfig, ConfigError, parse, run, serve, version
from cluster.agent.state import State
from cluster.agent.sysinfo import hello_info
from storage.connection import Database, connect
from storage.keyspace import Keyspace
from storage.servers import ServerStore
from tests.agent_peer import Peer
from tests.jobkit import SECRET, Jobs, alive, token
from tests.servers import AgentProcess, Cluster, Node
from tests.test_jobs_run import until, wait_log

pytestmark = pytest.mark.timeout(300)

SERVER = "sa"


@asynccontextmanager
async def agent(config: AgentConfig) -> AsyncIterator[asyncio.Task[int]]:
    """`podium agent` in this process (serve() with a stop event), stopped on the way out."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop=stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def config_for(urls: Sequence[str], data_dir: Path, server_id: str = SERVER) -> AgentConfig:
    return AgentConfig(urls=tuple(urls), token=token(server_id), server_id=server_id, data_dir=data_dir,
                       hostname="box1")  # fmt: skip


@dataclass
class Site:
    """One real node and the admin's API calls on it."""

    c: Cluster
    node: Node
    jobs: Jobs

    async def job(self, script: str, server_id: str = SERVER, **run: Any) -> dict[str, Any]:
        """Run `script` on `server_id` and wait for its final record."""
        event = await self.jobs.event(self.node, script, targets=[server_id])
        return await self.jobs.wait_job(self.node, await self.jobs.run(self.node, event, **run), timeout=120)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with Cluster(tmp_path / "cluster", size=1, extra=("--secret-key", SECRET)) as c:
        node = await c.wait_single_primary()
        yield Site(c, node, await Jobs.login(c, node))


def node_events(node: Node, event: str, server_id: str = SERVER) -> list[dict[str, Any]]:
    """The node's JSON log lines of `event` about `server_id`."""
    found = []
    for line in node.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event and record.get("server") == server_id:
            found.append(record)
    return found


async def socket_holder(c: Cluster, server_id: str) -> str | None:
    """The node id holding the agent's socket, as the cluster records it."""
    db = Database(connect(c.redis.url), Keyspace("podium"))
    try:
        owner = await ServerStore(db).owner(server_id)
    finally:
        await db.aclose()
    return owner.split("|")[0] if owner else None


def messages(job: Mapping[str, Any]) -> list[str]:
    return [str(row.get("msg")) for row in job.get("activity") or []]


async def fetch(site: Site, path: str) -> tuple[int, bytes]:
    assert site.c.http is not None
    async with site.c.http.get(f"{site.node.url}/{path}", headers=site.jobs.headers) as resp:
        return resp.status, await resp.read()


# -- real nodes --------------------------------------------------------------------------------------------------

SCRIPT = """#!/bin/sh
echo "hello from $JOB_ID"
echo 50%
echo report > out.txt
echo '{"xy":1,"files":["*.txt"],"data":{"n":1}}'
"""


async def test_a_job_runs_reports_and_finishes(site: Site, tmp_path: Path) -> None:
    async with agent(config_for([site.node.url], tmp_path / "a")):
        [row] = await site.jobs.wait_servers(site.node, 1)
        assert (row["id"], row["hostname"]) == (SERVER, "box1")
        assert row["info"]["podium"] and row["info"]["features"] == {"log_offsets": True}
        job = await site.job(SCRIPT)
    assert job["code"] == 0 and job["server"] == SERVER and job["progress"] == 1.0, job
    assert job["data"] == {"n": 1}
    log = await site.jobs.log(site.node, job["id"])
    assert log == f"hello from {job['id']}\n"
    assert job["log_size"] == job["log_file_size"] == len(log)
    [file] = job["files"]
    assert (file["filename"], file["server"], file["job"]) == ("out.txt", SERVER, job["id"])
    assert await fetch(site, file["path"]) == (200, b"report\n")
    assert any(m.startswith("Spawned child process") for m in messages(job)), messages(job)
    assert "Job is finishing" in messages(job)
    assert not (tmp_path / "a" / "jobs" / job["id"]).exists()


class Counting:
    """A link handler that counts joins and drops."""

    def __init__(self) -> None:
        self.joined_count = 0
        self.dropped = 0

    async def joined(self, data: Mapping[str, Any]) -> None:
        self.joined_count += 1

    def command(self, cmd: str, data: Any) -> None:
        pass

    def disconnected(self) -> None:
        self.dropped += 1


async def test_jobs_finishing_together_keep_their_held_fields(site: Site, tmp_path: Path) -> None:
    """Many jobs finishing while the 1 s reports go out: each final record has its data and log size (a report
    saying 'complete' that overtook finish_job used to finish a job without them)."""
    script = """#!/bin/sh\necho out\nsleep 1.3\necho '{"xy":1,"data":{"n":2}}'\n"""
    async with agent(config_for([site.node.url], tmp_path / "a")):
        await site.jobs.wait_servers(site.node, 1)
        event = await site.jobs.event(site.node, script, targets=[SERVER])
        done = []
        for _ in range(4):
            ids = [await site.jobs.run(site.node, event) for _ in range(25)]
            done += [await site.jobs.wait_job(site.node, i, timeout=120) for i in ids]
    bad = [(j["id"], j.get("data"), j.get("log_size")) for j in done if (j.get("data"), j.get("log_size")) != (
        {"n": 2}, 4)]  # fmt: skip
    assert not bad, f"{len(bad)} of {len(done)}: {bad[:5]}"


async def test_echo_keeps_an_idle_link_up_both_ways(site: Site, tmp_path: Path) -> None:
    """Idle past the node's silence limit, with the link's own idle limit set below the node's echo period: the
    link stays up only if the node echoes and the agent answers."""
    state = State(tmp_path / "config.json", server_id=SERVER, auth_token=token(SERVER))
    handler = Counting()
    async with aiohttp.ClientSession() as session:
        link = Link([site.node.url], state, "box1", hello_info(version(), "box1"), handler, session, idle_timeout=8)
        task = asyncio.create_task(link.run())
        await site.jobs.wait_servers(site.node, 1)
        await asyncio.sleep(SILENT_TIMEOUT_S + 10)  # the node drops an agent silent this long
        rows = await site.jobs.servers(site.node)
        await link.stop()
        assert await asyncio.wait_for(task, 30) == 0
    assert [r["id"] for r in rows] == [SERVER]
    assert (handler.joined_count, handler.dropped, link.connects) == (1, 1, 1)  # the one drop is the stop
    assert len(node_events(site.node, "agent_joined")) == 1


async def test_input_files_are_downloaded_into_the_job_directory(site: Site, tmp_path: Path) -> None:
    async with agent(config_for([site.node.url], tmp_path / "a")):
        await site.jobs.wait_servers(site.node, 1)
        first = await site.job(SCRIPT)
        [file] = first["files"]
        second = await site.job("#!/bin/sh\ncat out.txt\nls\n", input={"files": [file]})
        missing = {"id": "fnone", "path": "files/jobs/jnone/k/none.txt", "filename": "x.txt", "size": 1}
        event = await site.jobs.event(site.node, "#!/bin/sh\necho never\n", targets=[SERVER])
        status, refused = await site.jobs.call(site.node, "run_event", {"id": event, "input": {"files": [missing]}})
    assert second["code"] == 0, second
    assert await site.jobs.log(site.node, second["id"]) == "report\nout.txt\n"
    assert "Downloading file: out.txt" in messages(second)
    # A file that is not stored never reaches an agent: run_event checks input files (api/handlers/uploads.py).
    assert (status, refused["description"]) == (400, f"Job input file not found: {missing['path']}"), refused


LINES = 400
NUMBERED = f"""#!/bin/sh
i=1
while [ "$i" -le {LINES} ]; do echo "line $i"; i=$((i+1)); sleep 0.05; done
"""


@pytest.mark.parametrize("victim", ["satellite", "primary"])
async def test_after_the_node_holding_the_socket_dies_output_is_sent_again_exactly(tmp_path: Path,
                                                                                    victim: str) -> None:  # fmt: skip
    """The node the agent is connected to is paused, then killed (-9), while a job prints numbered lines: the
    agent joins the other node and sends what was not acknowledged again; the stored log has every line once,
    in order."""
    async with Cluster(tmp_path / "cluster", size=2, extra=("--secret-key", SECRET)) as c:
        await c.wait_all_up()
        primary = await c.wait_single_primary()
        satellite = next(n for n in c.nodes if n is not primary)
        target, other = (primary, satellite) if victim == "primary" else (satellite, primary)
        jobs = await Jobs.login(c, primary)
        async with agent(config_for([target.url, other.url], tmp_path / "a")):
            await jobs.wait_servers(primary, 1)
            assert await socket_holder(c, SERVER) == target.node_id
            job_id = await jobs.run(primary, await jobs.event(primary, NUMBERED, targets=[SERVER]))
            await wait_log(jobs, other, job_id, "line 40\n")
            target.pause()  # what the job prints now reaches the node's socket but is never stored or acknowledged
            await asyncio.sleep(2.0)
            target.kill9()
            done = await jobs.wait_job(other, job_id, timeout=180)
            assert await socket_holder(c, SERVER) == other.node_id
        want = "".join(f"line {i}\n" for i in range(1, LINES + 1))
        log = await jobs.log(other, job_id)
    assert done["code"] == 0, done
    assert log == want, f"{len(log)} bytes, expected {len(want)}"
    assert done["log_size"] == done["log_file_size"] == len(want)
    assert "Lost connection to conductor; reconnected" in messages(done)
    assert len(node_events(other, "agent_joined")) == 1


async def test_finish_waits_until_the_log_is_acknowledged(tmp_path: Path) -> None:
    """A job prints a burst and exits while the node holding the socket is paused, so none of the burst is
    acknowledged; that node is then killed. The agent finishes only once the other node has stored (and
    acknowledged) the whole log, so the stored log is complete when the job is."""
    count = 1_000_000
    go, done = tmp_path / "go", tmp_path / "done"
    script = f"#!/bin/sh\necho ready\nwhile [ ! -e {go} ]; do sleep 0.05; done\nseq 1 {count}\ntouch {done}\n"
    async with Cluster(tmp_path / "cluster", size=2, extra=("--secret-key", SECRET)) as c:
        await c.wait_all_up()
        primary = await c.wait_single_primary()
        satellite = next(n for n in c.nodes if n is not primary)
        jobs = await Jobs.login(c, primary)
        async with agent(config_for([satellite.url, primary.url], tmp_path / "a")):
            await jobs.wait_servers(primary, 1)
            assert await socket_holder(c, SERVER) == satellite.node_id
            job_id = await jobs.run(primary, await jobs.event(primary, script, targets=[SERVER]))
            await wait_log(jobs, primary, job_id, "ready\n")  # running on the agent, its output stored
            satellite.pause()
            go.touch()
            await until(done.exists, timeout=120)
            await asyncio.sleep(1.0)  # the agent has read the burst and is finishing
            satellite.kill9()
            job = await jobs.wait_job(primary, job_id, timeout=180)
        log = await jobs.log(primary, job_id)
    want = "ready\n" + "".join(f"{i}\n" for i in range(1, count + 1))
    assert job["code"] == 0, job
    assert log == want, f"{len(log)} bytes, expected {len(want)}"
    assert job["log_size"] == job["log_file_size"] == len(want)


async def test_abort_from_the_conductor(site: Site, tmp_path: Path) -> None:
    node, jobs = site.node, site.jobs
    async with agent(config_for([node.url], tmp_path / "a")):
        await jobs.wait_servers(node, 1)
        event = await jobs.event(node, "#!/bin/sh\necho 10%\nsleep 300 &\necho pids $$ $!\nwait\n", targets=[SERVER])
        job_id = await jobs.run(node, event)
        pids = [int(p) for p in re.findall(r"\d+", await wait_log(jobs, node, job_id, "pids"))]
        assert len(pids) == 2 and all(alive(p) for p in pids)

        async def measured() -> dict[str, Any] | None:  # the 1 s report with the process tree's figures
            live = await jobs.job(node, job_id)
            return live if live.get("progress") == 0.1 and live.get("mem") else None

        live = await site.c.wait_for(measured, timeout=60)
        assert live["mem"]["count"] >= 1 and live["mem"]["current"] > 0 and "cpu" in live, live
        await jobs.ok(node, "abort_job", {"id": job_id})
        done = await jobs.wait_job(node, job_id, timeout=60)
        await until(lambda: not any(alive(p) for p in pids))
    assert (done["code"], done["description"]) == ("abort", "Manually aborted by user: admin"), done


async def test_a_wrong_token_is_an_auth_failure_and_the_agent_exits_1(site: Site, tmp_path: Path) -> None:
    wrong = token(SERVER, "not-the-secret")
    proc = AgentProcess(tmp_path / "a", [site.node.url], SERVER, wrong).start()
    try:
        assert proc.proc is not None
        assert await asyncio.to_thread(proc.proc.wait, 60) == 1
    finally:
        proc.kill9()
    assert "Authentication failed." in proc.log_text() and wrong not in proc.log_text()
    assert node_events(site.node, "agent_auth_failed") and not await site.jobs.servers(site.node)


async def test_enrolment_with_an_api_key_persists_the_identity_and_joins(site: Site, tmp_path: Path) -> None:
    node, jobs = site.node, site.jobs
    adder = str((await jobs.ok(node, "create_api_key", {"title": "adder", "privileges": {"add_servers": True}}))
                ["plain_key"])  # fmt: skip
    reader = str((await jobs.ok(node, "create_api_key", {"title": "reader"}))["plain_key"])
    data_dir = tmp_path / "a"
    async with agent(AgentConfig(urls=(node.url,), api_key=adder, data_dir=data_dir, hostname="box1")):
        [row] = await jobs.wait_servers(node, 1)
    path = data_dir / "config.json"
    saved = json.loads(path.read_text())
    server_id = saved["server_id"]
    assert row["id"] == server_id and row["hostname"] == "box1"
    assert saved["auth_token"] == token(server_id)
    assert saved["urls"] == [node.url]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    async def offline() -> bool:
        return not await jobs.servers(node)

    await site.c.wait_for(offline)
    # The identity is the data dir's now: no key or token needed to join again, as the same server.
    async with agent(AgentConfig(urls=(node.url,), data_dir=data_dir, hostname="box1")):
        [again] = await jobs.wait_servers(node, 1)
        job = await site.job("#!/bin/sh\necho enrolled\n", server_id=server_id)
    assert again["id"] == server_id and job["code"] == 0 and job["server"] == server_id, job
    for key in (reader, "not-a-key"):
        with pytest.raises(ConfigError, match="enrolment refused"):
            await serve(AgentConfig(urls=(node.url,), api_key=key, data_dir=tmp_path / "b"), stop=asyncio.Event())
    assert not (tmp_path / "b" / "config.json").exists()


async def test_podium_agent_as_a_process_joins_runs_a_job_and_stops_on_sigterm(site: Site, tmp_path: Path) -> None:
    proc = AgentProcess(tmp_path / "a", [site.node.url], "sproc", token("sproc")).start()
    try:
        await site.jobs.wait_servers(site.node, 1)
        job = await site.job("#!/bin/sh\necho from the process\n", server_id="sproc")
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.proc.wait, 60) == 0
    finally:
        proc.kill9()
    assert job["code"] == 0 and await site.jobs.log(site.node, job["id"]) == "from the process\n", job
    assert node_events(site.node, "agent_left", "sproc")
    assert token("sproc") not in proc.log_text()


# -- the scripted peer: frames a Podium node never sends its own agent ---------------------------------------------


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    node = await Peer().start()
    yield node
    await node.stop()


def peer_config(peer: Peer, tmp_path: Path) -> AgentConfig:
    return AgentConfig(urls=(peer.url,), token=peer.token, server_id=peer.server_id, data_dir=tmp_path / "a",
                       hostname="box1")  # fmt: skip


def launch(job_id: str, script: str) -> dict[str, Any]:
    return {"job": {"id": job_id, "command": "[shell-plugin]", "params": {"script": script}, "now": 1},
            "details": {"input": {}}, "sec": {}}  # fmt: skip


async def test_a_duplicate_launch_runs_once(peer: Peer, tmp_path: Path) -> None:
    async with agent(peer_config(peer, tmp_path)):
        await peer.wait(lambda: peer.joins == 1)
        await peer.send("launch_job", launch("j2", "echo once\n"))
        await peer.send("launch_job", launch("j2", "echo twice\n"))
        await peer.wait(lambda: "j2" in peer.finished)
    assert peer.logs["j2"].decode() == "once\n"


async def test_a_redirect_is_followed(peer: Peer, tmp_path: Path) -> None:
    other = await Peer(redirect_to=peer.url, token=peer.token).start()
    try:
        async with agent(peer_config(other, tmp_path)):
            await peer.wait(lambda: peer.joins == 1)
        assert other.joins == 0 and other.got("hello")
    finally:
        await other.stop()


async def test_a_silent_conductor_is_dropped_and_rejoined(peer: Peer, tmp_path: Path) -> None:
    state = State(tmp_path / "config.json", server_id="s1", auth_token=peer.token)
    handler = Counting()
    async with aiohttp.ClientSession() as session:
        link = Link([peer.url], state, "box", {}, handler, session, idle_timeout=0.3)
        task = asyncio.create_task(link.run())
        await peer.wait(lambda: peer.joins >= 2)  # nothing was sent for 0.3 s: dropped, then joined again
        await link.stop()
        assert await asyncio.wait_for(task, 10) == 0
    assert handler.joined_count >= 2 and handler.dropped >= 1


async def test_retry_reconnects_and_update_config_persists_a_new_token(peer: Peer, tmp_path: Path) -> None:
    async with agent(peer_config(peer, tmp_path)):
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


# -- options and config: no conductor needed -------------------------------------------------------------------

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


def test_the_podium_command_hands_agent_options_to_the_agent(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["agent", "--url", "ftp://nowhere"], {}) == 2
    assert "podium agent: error: --url 'ftp://nowhere'" in capsys.readouterr().err

