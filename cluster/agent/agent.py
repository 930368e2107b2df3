"""The agent: the runner's events become frames on the link, the link's commands drive the runner.

Reporting: every second a `jobs` frame with every running job and its process figures (metrics.py: `cpu`,
`mem`, `procs`, `conns`), and at once on a change (without `procs` and `conns`, as xySat); held fields (data,
serverData, workflowData) only in the final report; one-shot fields (push, table, html, markdown, text) dropped
once sent. Output goes out as `job_log {id, text, offset}` batched every 50 ms (or at once past 1 MiB) and is
kept until `log_ack`. Nothing is queued while disconnected: after `joined` a `jobs` frame re-attaches every job
(`reconnected`) and unacknowledged output is sent again. The conductor keeps the timelines (second, minute) from
the ticks, as xyOps does: nothing more is sent for them.

Finishing a job (retried until accepted): state 'finishing' -> wait (up to 60 s while connected) until its log
is acknowledged -> sync: an empty `job_log` at the end of its output, whose acknowledgement says the node has
taken every frame before it (up to 10 s; the final report goes by HTTP and must not overtake them) -> upload its
files -> POST finish_job (state 'complete') until code 0 (or code 'job': the conductor does not know it or has it
complete already) -> delete its working directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from .conductor import CallError, Conductor
from .hostmon import HostMonitor
from .link import Link
from .logbuf import CHUNK
from .metrics import ConnTracker, Measured, TreeMeter, tree
from .monitorplugins import MonitorPlugins
from .output import HELD
from .runner import JobRun, Runner
from .sockets import SocketReader
from .sysinfo import ProcTable

log = logging.getLogger("podium.agent")

ONE_SHOT = ("push", "table", "html", "markdown", "text")
LOCAL_ONLY = ("procs", "conns")  # sent with the tick only
ALWAYS = frozenset({"id", "state", "progress"})  # in every report, changed or not
TICK = 1.0
FLUSH = 0.05
ACK_WAIT = 60.0
SYNC_WAIT = 10.0  # s connected: how long a finish waits for the node to confirm it has the job's last frames
MAX_FILES = 1000
MAX_META = 10_000


class Agent:
    """Ties a Runner to a Link (implements both Runner events and the Link handler)."""

    def __init__(self, runner_factory: Any, link_factory: Any, conductor: Conductor, *,
                 monitor_interval: float = 60.0) -> None:  # fmt: skip
        self.conductor = conductor
        self.runner: Runner = runner_factory(self)
        self.link: Link = link_factory(self)
        settings = self.runner.settings
        self.host = HostMonitor(self.link, self.link.hostname, MonitorPlugins(settings.data_dir, settings.environ),
                                server_id=lambda: self.link.state.server_id, jobs=self.job_procs,
                                saved_config=lambda: self.link.state.config, interval=monitor_interval)  # fmt: skip
        self.meters: dict[str, TreeMeter] = {}
        self.table = ProcTable()
        self.sockets = SocketReader()
        self.conns = ConnTracker()
        self.state_extra: dict[str, Any] = {}  # groups, plugins, commands from `joined` / `update`
        self._dirty: dict[str, JobRun] = {}
        self._metas: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._finishing: set[asyncio.Task[None]] = set()
        # The finish sync (see `_sync`): runs waiting for one, and per run the job_log frames sent and acknowledged
        # on this connection (acknowledgements come back in the order the frames went).
        self._sync_wanted: dict[str, asyncio.Event] = {}
        self._sync_at: dict[str, int] = {}
        self._log_frames: dict[str, int] = {}
        self._log_acks: dict[str, int] = {}

    # Runner events
    def changed(self, run: JobRun) -> None:
        self._dirty[run.id] = run
        self._wake.set()

    def logged(self, run: JobRun) -> None:
        if run.log.unsent >= CHUNK:
            self._wake.set()

    def meta(self, run: JobRun, text: str) -> None:
        log.debug("job_meta job=%s text=%s", run.id, text)
        if self.link.authed.is_set() and len(self._metas) < MAX_META:
            self._metas.append((run.id, text))
            self._wake.set()

    def exited(self, run: JobRun) -> None:
        task = asyncio.create_task(self.finish(run))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    # Link handler
    async def joined(self, data: Mapping[str, Any]) -> None:
        config = data.get("config")
        if isinstance(config, dict):
            job_env = config.get("job_env")
            self.runner.job_env = job_env if isinstance(job_env, dict) else {}
        self.state_extra.update({k: data[k] for k in ("groups", "plugins", "features") if k in data})
        self.host.joined(data, busy=bool(self.runner.runs))
        if self.runner.runs:
            now = time.time()
            await self.link.send("jobs", {r.id: {**self.report(r), "reconnected": now}
                                          for r in self.runner.runs.values()})  # fmt: skip
            for run in self.runner.runs.values():
                run.log.rewind()
                self.meta(run, "Lost connection to conductor; reconnected")
        self._wake.set()

    def disconnected(self) -> None:
        self._metas.clear()
        self._log_frames.clear()
        self._log_acks.clear()
        self._sync_at.clear()
        for waiting in self._sync_wanted.values():
            waiting.set()  # what the node had not taken is gone with the connection: nothing more to wait for
        self._sync_wanted.clear()
        for run in self.runner.runs.values():
            run.log.rewind()

    def command(self, cmd: str, data: Any) -> None:
        if cmd == "launch_job" and isinstance(data.get("job"), dict):
            details = data.get("details") if isinstance(data.get("details"), dict) else {}
            sec = data.get("sec") if isinstance(data.get("sec"), dict) else {}
            self.runner.launch(data["job"], details, sec, self.link.base_url or "")
        elif cmd == "abort_job" and isinstance(data.get("id"), str):
            if not self.runner.abort(data["id"], str(data.get("reason") or "Aborted")):
                log.info("abort_ignored job=%s", data["id"])
        elif cmd == "log_ack":
            for job_id, offset in data.items():
                run = self.runner.runs.get(job_id)
                if run is not None and isinstance(offset, int):
                    run.log.ack(offset)
                if run is not None:
                    self._log_acks[job_id] = self._log_acks.get(job_id, 0) + 1
                    self._synced(job_id)
            self._acked.set()
        elif cmd == "update":
            self.state_extra.update({k: v for k, v in data.items() if k != "commands"})
            self.host.update(data)
        elif cmd == "testMonitorPlugin":
            task = asyncio.create_task(self.host.test_plugin(data))
            self._finishing.add(task)  # (held until done, like finishes; a test run is bounded by its timeout)
            task.add_done_callback(self._finishing.discard)
        elif cmd == "updateConfig":
            state = self.link.state
            if isinstance(data.get("auth_token"), str) and data["auth_token"]:
                state.auth_token = self.conductor.token = data["auth_token"]
            state.config.update({k: v for k, v in data.items() if k != "auth_token"})
            state.save()
        else:
            log.debug("command_ignored cmd=%s", cmd)

    def job_procs(self) -> tuple[int, dict[int, tuple[str, Any]]]:
        """The running jobs' count, and their processes as the last tick measured them (for `monitor`)."""
        procs: dict[int, tuple[str, Any]] = {}
        for run in self.runner.runs.values():
            for pid, figures in (run.job.get("procs") or {}).items():
                if str(pid).isdigit() and isinstance(figures, Mapping):
                    procs[int(pid)] = (run.id, figures)
        return len(self.runner.runs), procs

    # Reporting
    def report(self, run: JobRun, procs: bool = False) -> dict[str, Any]:
        """What changed in a job since its launch (the conductor has the rest): a report stays small however
        large the job's script or params are."""
        base = run.launched
        return {k: v for k, v in run.job.items() if k not in HELD and (procs or k not in LOCAL_ONLY)
                and (k not in base or base[k] != v or k in ALWAYS)}  # fmt: skip

    def _sent(self, run: JobRun) -> None:
        for key in ONE_SHOT:
            run.job.pop(key, None)

    async def flusher(self) -> None:
        """Sends changes, meta lines and output, in that order, every 50 ms or when woken."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH)
            self._wake.clear()
            if not self.link.authed.is_set():
                continue
            dirty, self._dirty = self._dirty, {}
            if dirty and await self.link.send("jobs", {i: self.report(r) for i, r in dirty.items()}):
                for run in dirty.values():
                    self._sent(run)
            metas, self._metas = self._metas, []
            for job_id, text in metas:
                await self.link.send("job_meta", {"id": job_id, "text": text})
            for run in list(self.runner.runs.values()):
                while (chunk := run.log.next_chunk()) is not None:
                    if not await self._send_log(run.id, chunk[1], chunk[0]):
                        break
            for job_id in [i for i in self._sync_wanted if i not in self._sync_at]:
                syncing = self.runner.runs.get(job_id)
                # An empty chunk where the output stands: the node stores nothing and acknowledges it, after
                # every frame sent before it (one socket is read in order).
                if syncing and not syncing.log.unsent and await self._send_log(job_id, "", syncing.log.size):
                    # (.get: a connection lost meanwhile cleared the counts, and released the wait)
                    self._sync_at[job_id] = self._log_frames.get(job_id, 0)
                    self._synced(job_id)

    async def _send_log(self, job_id: str, text: str, offset: int) -> bool:
        self._log_frames[job_id] = self._log_frames.get(job_id, 0) + 1  # before: its ack may come back at once
        if await self.link.send("job_log", {"id": job_id, "text": text, "offset": offset}):
            return True
        self._log_frames[job_id] = self._log_frames.get(job_id, 1) - 1
        return False

    async def ticker(self) -> None:
        """Every second: every job not yet finished, with its process tree's figures."""
        while True:
            await asyncio.sleep(TICK)
            runs = list(self.runner.runs.values())
            if not runs or not self.link.authed.is_set():
                continue
            roots = []
            for run in runs:
                pid = run.job.get("pid")
                if isinstance(pid, int) and pid > 0 and not run.job.get("complete"):
                    roots.append((run.id, pid, self.meters.setdefault(run.id, TreeMeter())))
            measured = await asyncio.to_thread(self._measure, roots)
            for run in runs:  # applied here, on the loop: other tasks read these jobs
                found = measured.get(run.id)
                if found is not None:
                    run.job.update(procs=found.procs, conns=found.conns, cpu=found.cpu, mem=found.mem)
                else:
                    run.job.pop("procs", None)
                    run.job.pop("conns", None)
            if await self.link.send("jobs", {r.id: self.report(r, procs=True) for r in runs}):
                for run in runs:
                    self._sent(run)

    def _measure(self, roots: list[tuple[str, int, TreeMeter]]) -> dict[str, Measured | None]:
        """In a thread: each job's process tree (the table, sockets and meters are only touched here). The process
        table is walked once for all of them (with a thousand jobs, one walk each would take the tick far past a
        second); then only the jobs' own processes are read."""
        if not roots:
            return {}
        now = time.time()  # when the table is walked: a process not seen then and started after was not there yet
        children = self.table.walk()
        trees = {job_id: tree(pid, children) for job_id, pid, _ in roots}
        table = self.table.read(pid for pids in trees.values() for pid in pids)
        conns = self.conns.update(self.sockets.read(table, now), now)
        return {job_id: meter.update(trees[job_id], table, conns, now) for job_id, _, meter in roots}

    # Finishing
    async def finish(self, run: JobRun) -> None:
        job = run.job
        job.update(complete=True, progress=1.0, state="finishing")
        job.pop("procs", None)
        job.pop("conns", None)
        self.meta(run, "Job is finishing")
        self.changed(run)
        await self._wait_for_acks(run)
        await self._sync(run)
        base_url = await self._base_url()
        files = collect_files(job.get("files"), run.cwd)
        try:
            job["files"] = [await self.conductor.upload(base_url, run.id, path, name) for path, name, _ in files]
            for path, _, delete in files:
                if delete:
                    path.unlink(missing_ok=True)
        except (CallError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            job.update(code=getattr(exc, "code", None) or "upload", description=str(exc) or "Upload failed", files=[])
        # The job stays 'finishing' here: a `jobs` frame saying 'complete' (a tick or a re-attach sent while
        # finish_job is on its way) would be taken as the final update, without the held fields and log size.
        final = {**self.report(run), **run.output.held, "state": "complete", "log_size": run.log.size}
        while True:
            base_url = await self._base_url()
            try:
                reply = await self.conductor.finish(base_url, run.id, final)
            except (CallError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("finish_retry job=%s error=%s", run.id, exc)
                reply = {}
            if reply.get("code") in (0, "job"):
                break
            await asyncio.sleep(1.0)
        log.info("job_finished job=%s code=%s", run.id, job.get("code"))
        self.meters.pop(run.id, None)
        self._log_frames.pop(run.id, None)
        self._log_acks.pop(run.id, None)
        self.runner.forget(run)

    async def _wait_for_acks(self, run: JobRun) -> None:
        waited = 0.0
        while not run.log.complete and waited < ACK_WAIT:
            self._acked.clear()
            start = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), 0.25)
            if self.link.authed.is_set():
                waited += time.monotonic() - start

    def _synced(self, job_id: str) -> None:
        """Release a finish waiting for its sync once the node has acknowledged every job_log frame up to it."""
        target = self._sync_at.get(job_id)
        if target is not None and self._log_acks.get(job_id, 0) >= target:
            del self._sync_at[job_id]
            waiting = self._sync_wanted.pop(job_id, None)
            if waiting is not None:
                waiting.set()

    async def _sync(self, run: JobRun) -> None:
        """Wait until the node has taken every frame sent for this job. The final report goes by HTTP, another
        connection, and could overtake them: a push, a table or a meta line the job's last moments sent would
        then arrive after the job is complete, and be dropped. A node that does not acknowledge output by offset
        (not Podium) gets no sync."""
        features = self.state_extra.get("features")
        if not (isinstance(features, Mapping) and features.get("log_offsets")) or not self.link.authed.is_set():
            return
        waiting = self._sync_wanted.setdefault(run.id, asyncio.Event())
        self._wake.set()
        waited = 0.0
        while not waiting.is_set() and waited < SYNC_WAIT:
            start = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiting.wait(), 0.25)
            if self.link.authed.is_set():
                waited += time.monotonic() - start
        self._sync_wanted.pop(run.id, None)
        self._sync_at.pop(run.id, None)

    async def _base_url(self) -> str:
        while True:
            await self.link.authed.wait()
            if self.link.base_url:
                return self.link.base_url
            await asyncio.sleep(0.1)

    async def drain(self, timeout: float) -> None:
        """Wait for jobs being finished (on shutdown)."""
        if self._finishing:
            await asyncio.wait(set(self._finishing), timeout=timeout)


def collect_files(files: Any, cwd: Path) -> list[tuple[Path, str, bool]]:
    """The job's `files` (string | [path, filename(, delete)] | {path, filename, delete}), globbed in cwd."""
    out: list[tuple[Path, str, bool]] = []
    legacy = cwd / ".job.log"
    entries = list(files) if isinstance(files, list) else []
    for entry in entries[:MAX_FILES]:
        if isinstance(entry, str):
            path, name, delete = entry, None, False
        elif isinstance(entry, list) and entry:
            path, name, delete = entry[0], (entry[1:2] or [None])[0], bool((entry[2:3] or [False])[0])
        elif isinstance(entry, dict) and entry.get("path"):
            path, name, delete = entry["path"], entry.get("filename"), bool(entry.get("delete"))
        else:
            continue
        full = os.path.join(cwd, str(path))
        if name:
            if os.path.isfile(full):
                out.append((Path(full), str(name), delete))
            continue
        out += [(Path(p), os.path.basename(p), delete) for p in sorted(glob.glob(full)) if os.path.isfile(p)]
    if legacy.is_file() and legacy.stat().st_size:
        out.append((legacy, "job.log", True))
    return out[:MAX_FILES]
