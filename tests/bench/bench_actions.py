"""Completion with actions: jobs/s when every job fires one web hook and one email, and the latency each action
adds. Prints figures.

Starts real `podium serve` nodes (access log off, email to a local SMTP sink) on one Redis server and real
agents, all on 127.0.0.1, and a sinks process (this module with `--sinks`): the web hook receiver of
tests/sinks.py and an aiosmtpd sink, which note the arrival time of every request and message and report them
on stdout, away from this process's event loop. Every process it starts it stops; the sinks process also ends
when this one does (its stdin closes) and after `--sinks-max-s` at most.

For each topology (`--nodes 1`: one node with its own agent; `--nodes 3`: three nodes and three agents):
(a) `--jobs` trivial jobs (`[shell-plugin]` running `true`) launched by `--clients` callers as fast as the API
    takes them, from an event with no actions, then from an event whose jobs each fire one web hook and one
    email on `complete`. A job without actions counts at its record's `completed` time; one with actions when
    its web hook and its email have both arrived. jobs/s = jobs / (last of those - first launch).
(b) the added latency per action, from the job's `completed` time to the arrival of its web hook at the
    receiver and of its email at the sink (one machine, one wall clock), p50/p99/max: under the load of (a),
    and with `--serial` jobs run one at a time. Also the time to the result recorded on the job (the action's
    `date`).
CPU per job of the nodes, the agents and Redis, and Redis commands per job, as bench_jobs prints them.

`--profile DIR` samples the primary with py-spy during the actions run of (a) (raw collapsed stacks into
DIR, readable by speedscope or flamegraph.pl) and prints the functions with the most samples; the sampling
costs CPU, so take the figures from a run without it.

    python -m tests.bench.bench_actions                      # 300 jobs, 1 node then 3 nodes
    python -m tests.bench.bench_actions --nodes 1 --jobs 300 --clients 8 --serial 50
    python -m tests.bench.bench_actions --nodes 1 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from storage.connection import Database, connect
from storage.keyspace import Keyspace
from tests.bench.bench_jobs import TRUE, children, completed, cpu, pct, redis_ops, topology
from tests.jobkit import Jobs
from tests.servers import ROOT, Cluster, Node, free_port
from tests.sinks import HookReceiver

HOOK_ID = "benchhook"
MAIL_TO = "bench@example.com"
HOOK_BODY = '{"job": "{{ job.id }}"}'
ACTIONS = [{"enabled": True, "condition": "complete", "type": "web_hook", "web_hook": HOOK_ID},
           {"enabled": True, "condition": "complete", "type": "email", "email": MAIL_TO}]  # fmt: skip
JOB_IN_TEXT = re.compile(r"`(j[a-z0-9]+)`")  # the job id as the email templates quote it
WARMUP = 5
PY_SPY = Path(sys.executable).with_name("py-spy")


# -- the sinks process -------------------------------------------------------------------------------------


class MailArrivals:
    """aiosmtpd handler: per message, when it arrived and the job it names."""

    def __init__(self) -> None:
        self._got: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = time.time()
        msg = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        found = JOB_IN_TEXT.search(body.get_content() if body is not None else "")
        with self._lock:
            self._got.append((at, found.group(1) if found else "?"))
        return "250 OK"

    def take(self) -> list[tuple[float, str]]:
        with self._lock:
            got, self._got = self._got, []
        return got


def _hook_job(body: str) -> str:
    try:
        return str(json.loads(body).get("job") or "?")
    except (ValueError, AttributeError):
        return "?"


async def serve_sinks(max_s: float) -> None:
    """`--sinks`: print `ready HOOK_PORT SMTP_PORT`, then `hook JOB AT` / `mail JOB AT` per arrival, until stdin
    closes or `max_s` passes."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    mail = MailArrivals()
    controller = Controller(mail, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        async with HookReceiver() as hooks:
            print(f"ready {hooks.port} {controller.port}", flush=True)
            reported, deadline = 0, time.monotonic() + max_s
            while not stop.is_set() and time.monotonic() < deadline:
                new, reported = hooks.requests[reported:], len(hooks.requests)
                lines = [f"hook {_hook_job(r.body)} {r.at:.6f}" for r in new]
                lines += [f"mail {job} {at:.6f}" for at, job in mail.take()]
                if lines:
                    sys.stdout.write("\n".join(lines) + "\n")
                    sys.stdout.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.01)
    finally:
        controller.stop()


class Sinks:
    """The sinks process and what it reported: job id -> arrival time (epoch s) of its web hook, of its email."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.hooks: dict[str, float] = {}
        self.mails: dict[str, float] = {}
        self.hook_port = self.smtp_port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._news = asyncio.Event()  # set on every arrival reported

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.hook_port}/{HOOK_ID}"

    def smtp_args(self) -> tuple[str, ...]:
        return ("--smtp-host", "127.0.0.1", "--smtp-port", str(self.smtp_port), "--smtp-tls", "none")

    async def __aenter__(self) -> Sinks:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.bench.bench_actions", "--sinks", "--sinks-max-s", str(self.max_s),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env)  # fmt: skip
        assert self._proc.stdout is not None
        ready = (await asyncio.wait_for(self._proc.stdout.readline(), 30)).decode().split()
        if len(ready) != 3 or ready[0] != "ready":
            await self.__aexit__()
            raise RuntimeError(f"the sinks process did not start: {ready}")
        self.hook_port, self.smtp_port = int(ready[1]), int(ready[2])
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            kind, job, at = line.decode().split()
            (self.hooks if kind == "hook" else self.mails)[job] = float(at)
            self._news.set()

    async def wait_all(self, ids: Sequence[str], timeout: float) -> bool:
        """Wait until every job of `ids` has its web hook and its email (False: not by `timeout`)."""
        deadline = time.monotonic() + timeout
        while any(self.arrived(i) is None for i in ids):
            self._news.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), left)
        return True

    def arrived(self, job_id: str) -> float | None:
        """When the later of the job's web hook and email arrived (None: not both yet)."""
        hook, mail = self.hooks.get(job_id), self.mails.get(job_id)
        return max(hook, mail) if hook is not None and mail is not None else None

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


# -- measuring ---------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One measured run: what was launched, when it completed, when its actions arrived, what it cost."""

    label: str
    jobs: int = 0
    launch_errors: int = 0
    launch_s: float = 0.0  # first launch to the last launch reply
    complete_s: float = 0.0  # first launch to the last `completed` of the jobs' records
    done_s: float = 0.0  # first launch to the last job counted done (its actions arrived, for a run with actions)
    done: int = 0
    hook_ms: list[float] = field(default_factory=list)  # job completed -> web hook arrived
    mail_ms: list[float] = field(default_factory=list)  # job completed -> email arrived
    recorded_ms: list[float] = field(default_factory=list)  # job completed -> both results recorded on the job
    action_errors: int = 0
    cpu_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per job done: nodes, agents, redis
    redis_cmds: float = 0.0  # per job done
    by_command: Counter[str] = field(default_factory=Counter)  # Redis calls per job done, by command
    profile: Profile | None = None


@dataclass
class Setup:
    cluster: Cluster
    jobs: Jobs
    primary: Node
    sinks: Sinks
    node_pids: list[int]
    agent_pids: list[int]


async def command_calls(c: Cluster) -> Counter[str]:
    """Calls so far per Redis command (INFO commandstats), scripts by EVALSHA and the rest by name."""
    db = Database(connect(c.redis.url), Keyspace("podium"))
    try:
        info: Any = await db.client.info("commandstats")
    finally:
        await db.aclose()
    return Counter({str(k).removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()})


async def launch(setup: Setup, event: str, count: int, clients: int) -> tuple[list[str], int, float]:
    """`count` jobs by `clients` callers back to back: (job ids, failed launches, time of the last reply)."""
    ids: list[str] = []
    started, errors, last = 0, 0, 0.0

    async def client() -> None:
        nonlocal started, errors, last
        while started < count:
            started += 1
            status, data = await setup.jobs.call(setup.primary, "run_event", {"id": event})
            if status == 200 and data.get("code") == 0:
                ids.append(str(data["id"]))
            else:
                errors += 1
            last = time.time()

    await asyncio.gather(*(client() for _ in range(clients)))
    return ids, errors, last


async def records(setup: Setup, ids: Sequence[str], actions: bool, timeout: float) -> dict[str, dict[str, Any]]:
    """The jobs' records once complete (and with both action results recorded, if `actions`), read 8 at a time;
    those not there by `timeout` are left out."""
    deadline = time.monotonic() + timeout
    out: dict[str, dict[str, Any]] = {}
    queue = list(ids)

    def settled(job: dict[str, Any]) -> bool:
        ran = [a for a in job.get("actions") or [] if a.get("source") != "universal"]
        return job.get("state") == "complete" and (not actions or (len(ran) >= 2 and all("code" in a for a in ran)))

    async def reader() -> None:
        while queue:
            job_id = queue.pop()
            while time.monotonic() < deadline:
                job = await setup.jobs.job(setup.primary, job_id)
                if settled(job):
                    out[job_id] = job
                    break
                await asyncio.sleep(0.2)

    await asyncio.gather(*(reader() for _ in range(8)))
    return out


def latencies(phase: Phase, setup: Setup, jobs: dict[str, dict[str, Any]]) -> None:
    for job_id, job in jobs.items():
        done = float(job["completed"])
        if job_id in setup.sinks.hooks:
            phase.hook_ms.append((setup.sinks.hooks[job_id] - done) * 1000)
        if job_id in setup.sinks.mails:
            phase.mail_ms.append((setup.sinks.mails[job_id] - done) * 1000)
        ran = [a for a in job.get("actions") or [] if a.get("source") != "universal" and "code" in a]
        if ran:
            phase.recorded_ms.append((max(float(a["date"]) for a in ran) - done) * 1000)
        phase.action_errors += sum(1 for a in ran if a["code"] != 0)


async def throughput(setup: Setup, event: str, actions: bool, count: int, clients: int, timeout: float,
                     profile: Path | None = None) -> Phase:  # fmt: skip
    phase = Phase("hook + email" if actions else "no actions")
    sinks, jobs, primary = setup.sinks, setup.jobs, setup.primary
    done0 = await completed(jobs, primary)
    spy = await start_profile(profile, primary.pid) if profile else None
    ops0, rcpu0 = await redis_ops(setup.cluster)
    calls0 = await command_calls(setup.cluster)
    cpu0, acpu0 = cpu(setup.node_pids), cpu(setup.agent_pids)
    t0 = time.time()
    ids, phase.launch_errors, last = await launch(setup, event, count, clients)
    phase.jobs, phase.launch_s = len(ids), last - t0
    if actions:
        await sinks.wait_all(ids, timeout)
    else:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await completed(jobs, primary) - done0 >= len(ids):
                break
            await asyncio.sleep(0.25)  # each poll is a search on the node: rare, so it costs little
    ops1, rcpu1 = await redis_ops(setup.cluster)
    calls = await command_calls(setup.cluster)
    calls.subtract(calls0)
    ncpu, acpu = cpu(setup.node_pids) - cpu0, cpu(setup.agent_pids) - acpu0
    if spy is not None:
        await stop_profile(spy)
        phase.profile = spy
    got = await records(setup, ids, actions, 60.0)
    ends = [float(j["completed"]) for j in got.values()]
    phase.complete_s = max(ends) - t0 if ends else 0.0
    if actions:
        arrivals = [a for a in (sinks.arrived(i) for i in ids) if a is not None]
        phase.done, phase.done_s = len(arrivals), (max(arrivals) - t0 if arrivals else 0.0)
        latencies(phase, setup, got)
    else:
        phase.done, phase.done_s = len(ends), phase.complete_s
    if phase.done:
        phase.cpu_ms = (ncpu / phase.done * 1000, acpu / phase.done * 1000, (rcpu1 - rcpu0) / phase.done * 1000)
        phase.redis_cmds = (ops1 - ops0) / phase.done
        phase.by_command = Counter({k: round(v / phase.done, 1) for k, v in calls.items() if v > 0})
    return phase


async def serial(setup: Setup, event: str, count: int, timeout: float) -> Phase:
    """One job at a time: launched once the previous one's web hook and email have arrived."""
    phase = Phase("hook + email, 1 at a time")
    ids = []
    t0 = time.time()
    for _ in range(count):
        job_id = await setup.jobs.run(setup.primary, event)
        ids.append(job_id)
        await setup.sinks.wait_all([job_id], timeout)
    got = await records(setup, ids, True, 60.0)
    arrivals = [a for a in (setup.sinks.arrived(i) for i in ids) if a is not None]
    phase.jobs, phase.done = len(ids), len(arrivals)
    phase.done_s = max(arrivals) - t0 if arrivals else 0.0
    ends = [float(j["completed"]) for j in got.values()]
    phase.complete_s = max(ends) - t0 if ends else 0.0
    latencies(phase, setup, got)
    return phase


# -- profile -----------------------------------------------------------------------------------------------


@dataclass
class Profile:
    """A py-spy recording of one process (raw collapsed stacks, one line per stack, thread first)."""

    path: Path
    proc: asyncio.subprocess.Process
    started: float
    seconds: float = 0.0


async def start_profile(folder: Path, pid: int) -> Profile:
    out, quiet = folder / f"primary-{pid}.txt", asyncio.subprocess.DEVNULL
    spy = (str(PY_SPY), "record", "--pid", str(pid), "--threads", "--format", "raw", "--rate", "100", "--output",
           str(out))  # fmt: skip
    started = time.monotonic()  # py-spy samples from about now (it attaches within the second below)
    proc = await asyncio.create_subprocess_exec(*spy, stdout=quiet, stderr=quiet)
    await asyncio.sleep(1.0)  # attached before the load starts
    return Profile(out, proc, started)


async def stop_profile(profile: Profile) -> None:
    profile.seconds = time.monotonic() - profile.started
    with contextlib.suppress(ProcessLookupError):
        profile.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        await asyncio.wait_for(profile.proc.wait(), 30)
    except TimeoutError:
        profile.proc.kill()
        await profile.proc.wait()


def _frame(text: str) -> str:
    """`func (path/to/file.py:123)` without the line number."""
    return re.sub(r":\d+\)$", ")", text.strip())


def summarize_profile(profile: Profile, top: int = 20) -> list[str]:
    """How busy the primary's event loop (its main thread) was, and the functions with the most samples there:
    own samples, and samples with the function on the stack. Other threads (the asyncio waitpid and executor
    threads) block in calls py-spy may count as busy, so they are only totalled."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in profile.path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *rest = stack.split(";")
        threads[thread.strip()] += count
        if not thread.strip().endswith("MainThread") or not rest:
            continue
        frames = [_frame(f) for f in rest]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    main = sum(own.values())
    if not main:
        return [f"  {profile.path}: no samples of the main thread"]
    busy = main / (100 * profile.seconds) * 100 if profile.seconds else 0.0
    lines = [f"  {profile.path}: {profile.seconds:.1f} s at 100 samples/s; the event loop (main thread) busy "
             f"{busy:.0f} % of the time ({main} samples); by thread: "
             + ", ".join(f"{t} {n}" for t, n in threads.most_common()), "  main thread, most own samples:"]  # fmt: skip
    lines += [f"    {n / main * 100:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines.append("  main thread, most samples with the function on the stack (Podium code):")
    ours = [(f, n) for f, n in inclusive.most_common() if re.search(r"\((api|cluster|storage)/", f)]
    lines += [f"    {n / main * 100:5.1f} %  {f}" for f, n in ours[:top]]
    return lines


# -- the run -----------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def setup_for(root: Path, nodes: int, sinks: Sinks) -> AsyncIterator[Setup]:
    own = nodes == 1
    async with topology(root, nodes, 0 if own else nodes, own, sinks.smtp_args()) as (c, jobs, procs):
        primary = await c.wait_single_primary()
        node_pids = [n.pid for n in c.nodes]
        agent_pids = [p.proc.pid for p in procs if p.proc] + [k for n in c.nodes for k in children(n.pid)]
        await jobs.ok(primary, "create_web_hook", {
            "id": HOOK_ID, "title": "Bench hook", "url": sinks.hook_url, "method": "POST",
            "headers": [{"name": "Content-Type", "value": "application/json"}], "body": HOOK_BODY})  # fmt: skip
        yield Setup(c, jobs, primary, sinks, node_pids, agent_pids)


async def bench_topology(root: Path, nodes: int, args: argparse.Namespace) -> list[Phase]:
    async with Sinks(args.sinks_max_s) as sinks, setup_for(root, nodes, sinks) as setup:
        plain = await setup.jobs.event(setup.primary, TRUE, title="No actions")
        acting = await setup.jobs.event(setup.primary, TRUE, title="Hook and email", actions=ACTIONS)
        for event in (plain, acting):  # warm-up: first runs compile templates, open pools
            for _ in range(WARMUP):
                await setup.jobs.wait_job(setup.primary, await setup.jobs.run(setup.primary, event))
        await asyncio.sleep(1.0)
        phases = [
            await throughput(setup, plain, False, args.jobs, args.clients, args.timeout),
            await throughput(setup, acting, True, args.jobs, args.clients, args.timeout, args.profile),
        ]
        if args.serial:
            phases.append(await serial(setup, acting, args.serial, 30.0))
        return phases


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{pct(values, 50):.0f} / {pct(values, 99):.0f} / {max(values):.0f}"


def table(rows: Sequence[tuple[str, Phase]]) -> list[str]:
    head = (f"{'topology':<10} {'run':<26} {'jobs':>9} {'launch/s':>8} {'done/s':>7} {'complete/s':>10} "
            f"{'hook ms p50/p99/max':>20} {'email ms p50/p99/max':>21} {'recorded ms':>17} {'errs':>4} "
            f"{'CPU ms/job node/agent/redis':>28} {'cmds/job':>8}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for where, p in rows:
        launch = f"{p.jobs / p.launch_s:.0f}" if p.launch_s > 0 else "-"
        done = f"{p.done / p.done_s:.1f}" if p.done_s > 0 else "-"
        complete = f"{p.jobs / p.complete_s:.1f}" if p.complete_s > 0 else "-"
        costs = "/".join(f"{v:.1f}" for v in p.cpu_ms) if p.redis_cmds else "-"
        cmds = f"{p.redis_cmds:.0f}" if p.redis_cmds else "-"
        lines.append(f"{where:<10} {p.label:<26} {f'{p.done}/{p.jobs}':>9} {launch:>8} {done:>7} {complete:>10} "
                     f"{_ms(p.hook_ms):>20} {_ms(p.mail_ms):>21} {_ms(p.recorded_ms):>17} "
                     f"{p.launch_errors + p.action_errors:>4} {costs:>28} {cmds:>8}")  # fmt: skip
    return lines


async def main_async(args: argparse.Namespace) -> None:
    rows: list[tuple[str, Phase]] = []
    with tempfile.TemporaryDirectory(prefix="podium-bench-actions-") as tmp:
        for nodes in args.nodes:
            where = "1 node" if nodes == 1 else f"{nodes} nodes"
            print(f"{where}: {args.jobs} jobs by {args.clients} callers ...", file=sys.stderr, flush=True)
            for phase in await bench_topology(Path(tmp) / f"n{nodes}", nodes, args):
                rows.append((where, phase))
    print("\n".join(table(rows)))
    print("done/s: jobs whose web hook and email both arrived (no actions: completed), per second from the first "
          "launch; complete/s: by the jobs' completed times; hook/email/recorded: ms from the job's completed time "
          "to the arrival at the receiver / the SMTP sink / the later result written on the job; errs: failed "
          "launches and action results with a code")  # fmt: skip
    print("Redis calls per job done, by command (INFO commandstats; scripts are evalsha):")
    for where, phase in rows:
        if phase.by_command:
            top = ", ".join(f"{k} {v:g}" for k, v in phase.by_command.most_common(10))
            print(f"  {where}, {phase.label}: {top}")
    for where, phase in rows:
        if phase.profile is not None:
            print(f"py-spy of the primary, {where}, {phase.label}:")
            print("\n".join(summarize_profile(phase.profile)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8, help="concurrent run_event callers")
    parser.add_argument("--nodes", default="1,3", help="topologies: 1 (one node, own agent) and/or 3")
    parser.add_argument("--serial", type=int, default=50, help="jobs run one at a time for unloaded latency")
    parser.add_argument("--timeout", type=float, default=180.0, help="most seconds a run waits for its jobs")
    parser.add_argument("--profile", type=Path, help="py-spy the primary during the actions run, into this folder")
    parser.add_argument("--sinks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sinks-max-s", type=float, default=1800.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sinks:
        asyncio.run(serve_sinks(args.sinks_max_s))
        return 0
    try:
        args.nodes = [int(n) for n in str(args.nodes).split(",")]
    except ValueError:
        parser.error("--nodes: a comma-separated list such as 1,3")
    if not 1 <= args.jobs <= 5000 or not 1 <= args.clients <= 256 or not 0 <= args.serial <= 1000:
        parser.error("--jobs 1-5000, --clients 1-256, --serial 0-1000")
    if any(n not in (1, 3) for n in args.nodes):
        parser.error("--nodes: 1 and/or 3")
    if args.profile and not PY_SPY.exists():
        parser.error(f"--profile needs py-spy next to the interpreter ({PY_SPY})")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
