"""The job runner: launches each job's plugin, turns its output into job state and log text, aborts it.

It knows nothing of the connection: what happens is reported through `Events` (a job changed, wrote output,
has a meta-log line, has exited), and input files come through an injected `Download`. When a job's work is
over (its process is gone, or it was aborted with kill mode `none`) the job is complete and `exited` fires;
finishing it (uploads, the final report) and then `forget()` are the caller's.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import shutil
import signal
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .command import BUILTIN, SetupError, account, split_command, write_script
from .environ import clean_env, plugin_env
from .logbuf import MEM_LIMIT, LogBuffer, Spool
from .output import MAX_LINE, JobOutput, LineSplitter, parse_record
from .plugin import BuiltinPlugin, Launch, Plugin, ProcessPlugin, signal_name
from .plugins import BUILTINS

log = logging.getLogger("podium.agent.runner")

SEEN_IDS = 10_000  # job ids remembered so a launch delivered twice (after a failover) runs once
Download = Callable[[Mapping[str, Any], Path], Awaitable[None]]


class Events(Protocol):
    """What the runner tells the rest of the agent."""

    def changed(self, run: JobRun) -> None:
        """State changed or a record arrived: report the job now."""

    def logged(self, run: JobRun) -> None:
        """New output is waiting in run.log."""

    def meta(self, run: JobRun, text: str) -> None:
        """A line for the job's meta log."""

    def exited(self, run: JobRun) -> None:
        """The job's work is over and the job is complete: finish it."""


@dataclass(frozen=True)
class RunnerSettings:
    """Where jobs run and how they are bounded."""

    data_dir: Path
    version: str = "0"
    kill_timeout: float = 10.0
    mem_limit: int = MEM_LIMIT
    spool_limit: int = 1024 * 1024 * 1024
    max_line: int = MAX_LINE
    max_jobs: int = 0  # 0 = no limit
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


class JobRun:
    """One job on this agent: its live state (`job`), held details, output buffer and plugin."""

    def __init__(self, job: dict[str, Any], details: Mapping[str, Any], log_buffer: LogBuffer, events: Events,
                 max_line: int) -> None:  # fmt: skip
        self.id: str = job["id"]
        self.launched = dict(job)  # the job as it came: reports carry only what changed since
        self.output = JobOutput(job=job)
        self.details = details
        self.log = log_buffer
        self.events = events
        self.plugin: Plugin | None = None
        self.cwd = Path(job["cwd"])
        self.base_url = ""
        self.muted = False  # detached (kill mode none): the plugin's output is no longer the job's
        self.detached = asyncio.Event()
        self.killer: asyncio.Task[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.exit_status: int | None = None
        self.metrics: dict[str, Any] = {}
        self._splitter = LineSplitter(max_line)
        self._out = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._err = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._warned = 0

    @property
    def job(self) -> dict[str, Any]:
        return self.output.job

    # Sink
    def stdout(self, data: bytes) -> None:
        if self.muted:
            return
        for line, whole in self._splitter.feed(data):
            self._line(line, whole)

    def _line(self, line: bytes, whole: bool) -> None:
        found = parse_record(line) if whole else None
        if found is None:
            self.text(self._out.decode(line))
        else:
            self.record(found)

    def stderr(self, data: bytes) -> None:
        if not self.muted:
            self.text(self._err.decode(data))

    def record(self, record: dict[str, Any]) -> None:
        if self.muted:
            return
        applied = self.output.apply(record)
        for warning in self.output.warnings[self._warned :]:
            self.meta("WARNING: " + warning)
        self._warned = len(self.output.warnings)
        if applied:
            self.events.changed(self)

    def meta(self, text: str) -> None:
        self.events.meta(self, text)

    def text(self, text: str) -> None:
        if text:
            self.log.write(text)
            self.events.logged(self)

    def spawned(self, pid: int) -> None:
        self.job["pid"] = pid
        self.meta(f"Spawned child process: PID {pid}")
        self.events.changed(self)

    def end_output(self) -> None:
        for line, whole in self._splitter.close():
            self._line(line, whole)
        self.text(self._out.decode(b"", final=True) + self._err.decode(b"", final=True))
        self.log.close()


class Runner:
    """Every job this agent runs."""

    def __init__(self, settings: RunnerSettings, events: Events, download: Download | None = None,
                 builtins: Mapping[str, Callable[[], Plugin]] = BUILTINS) -> None:  # fmt: skip
        self.settings = settings
        self.events = events
        self.download = download
        self.builtins = builtins
        self.runs: dict[str, JobRun] = {}
        self.spool = Spool(settings.data_dir / "spool", settings.spool_limit)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._orphans: set[asyncio.Task[Any]] = set()
        self.job_env: Mapping[str, Any] = {}

    def launch(self, job: Mapping[str, Any], details: Mapping[str, Any], secrets: Mapping[str, Any],
               base_url: str) -> JobRun | None:  # fmt: skip
        """Start a job; None when this id already ran here (a launch delivered twice)."""
        job_id = job.get("id")
        if not isinstance(job_id, str) or not job_id or "/" in job_id or job_id in (".", "..") or len(job_id) > 128:
            log.warning("launch_ignored reason=bad_id")
            return None
        if job_id in self._seen:
            log.info("launch_ignored job=%s reason=duplicate", job_id)
            return None
        self._seen[job_id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        local = {k: v for k, v in job.items() if k != "activity"}
        local.update(cwd=str((self.settings.data_dir / "jobs" / job_id).resolve()), state="active")
        local.pop("complete", None)
        run = JobRun(local, details, LogBuffer(self.spool, job_id, self.settings.mem_limit), self.events,
                     self.settings.max_line)  # fmt: skip
        run.base_url = base_url
        self.runs[job_id] = run
        run.task = asyncio.create_task(self._run(run, dict(secrets)))
        return run

    async def _run(self, run: JobRun, secrets: dict[str, Any]) -> None:
        try:
            await self._start_and_wait(run, secrets)
        except SetupError as exc:
            self._fail(run, str(exc))
        except OSError as exc:
            self._fail(run, f"Child spawn error: {run.job.get('command')}: {exc.strerror or exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave a job hanging: report it as the job's failure
            log.exception("job_failed job=%s", run.id)
            self._fail(run, f"Agent error: {exc}")
        run.end_output()
        if run.job.get("code") not in (0, None, "") and not run.job.get("description"):
            run.job["description"] = "Unknown Error (no description provided)"
        run.job["complete"] = True
        self.events.exited(run)

    def _fail(self, run: JobRun, description: str) -> None:
        if not run.job.get("complete"):
            run.job.update(code=1, description=description, complete=True)
        run.job.setdefault("pid", 0)
        log.warning("job_failed_to_start job=%s", run.id)

    async def _start_and_wait(self, run: JobRun, secrets: dict[str, Any]) -> None:
        settings = self.settings
        if settings.max_jobs and sum(1 for r in self.runs.values() if r.plugin) >= settings.max_jobs:
            raise SetupError(f"Setup Error: This server is already running {settings.max_jobs} jobs")
        user = account(run.job)
        try:
            _remove_dir(run.cwd)
            run.cwd.mkdir(parents=True, mode=0o777)
            if user.switch:
                os.chown(run.cwd, user.uid, user.gid)  # the job's own directory belongs to the account it runs as
        except OSError as exc:
            raise SetupError(f"Setup Error: Cannot make the job directory: {exc.strerror or exc}") from None
        await self._fetch_inputs(run)
        env = plugin_env(clean_env(settings.environ, str(run.cwd)), run.job, details=run.details, secrets=secrets,
                         job_env=self.job_env, version=settings.version, log_file=str(run.cwd / ".job.log"),
                         base_url=run.base_url, account=user.env())  # fmt: skip
        plugin = self._plugin(run, env)
        stdin = {"xy": 1, "type": "event", **{k: v for k, v in run.job.items() if k != "type"}, **run.details,
                 "secrets": secrets, "base_url": run.base_url, "temp_dir": str(settings.data_dir.resolve()),
                 "activity": None}  # fmt: skip
        launch = Launch(job=run.job, stdin=(json.dumps(stdin, separators=(",", ":")) + "\n").encode(), env=env,
                        cwd=run.cwd, temp_dir=settings.data_dir.resolve(), base_url=run.base_url, secrets=secrets,
                        user=user.uid if user.switch else None, group=user.gid if user.switch else None,
                        extra_groups=user.groups() if user.switch else None)  # fmt: skip
        if run.job.get("code") == "abort":  # aborted while its files came down
            return
        run.plugin = plugin
        run.job.setdefault("pid", 0)  # a built-in has no process of its own
        await self._wait(run, plugin, launch)

    async def _fetch_inputs(self, run: JobRun) -> None:
        job_input = run.details.get("input")
        files = job_input.get("files") if isinstance(job_input, Mapping) else None
        if not files or not isinstance(files, list):
            return
        if self.download is None:
            raise SetupError("Setup Error: Input files cannot be downloaded here")
        for file in files[:1000]:
            if not isinstance(file, Mapping) or not isinstance(file.get("path"), str):
                continue
            name = os.path.basename(str(file.get("filename") or file["path"])) or "file"
            run.meta(f"Downloading file: {name}")
            try:
                await self.download(file, run.cwd / name)
            except Exception as exc:
                raise SetupError(f"Setup Error: Failed to download job file: {name}: {exc}") from None

    def _plugin(self, run: JobRun, env: Mapping[str, str]) -> Plugin:
        command = str(run.job.get("command") or "")
        builtin = BUILTIN.match(command.strip())
        if builtin:
            factory = self.builtins.get(builtin.group(1))
            if factory is None:
                raise SetupError(f"Plugin not found: {builtin.group(1)}")
            return factory()
        argv = split_command(command, env)
        script = run.job.get("script")
        if isinstance(script, str) and script:
            argv.append(str(write_script(self.settings.data_dir / "plugins", run.job.get("plugin"), script)))
        return ProcessPlugin(argv)

    async def _wait(self, run: JobRun, plugin: Plugin, launch: Launch) -> None:
        work = asyncio.create_task(plugin.run(launch, run))
        detach = asyncio.create_task(run.detached.wait())
        done, _ = await asyncio.wait({work, detach}, return_when=asyncio.FIRST_COMPLETED)
        detach.cancel()
        if work in done:
            status = work.result()
        else:  # kill mode none: the process is left running and no longer part of the job
            self._orphans.add(work)
            work.add_done_callback(self._orphans.discard)
            status = None
        if run.killer is not None:
            await run.killer
        run.exit_status = status
        if status is not None:
            self._exit_code(run, status)

    def _exit_code(self, run: JobRun, status: int) -> None:
        # xySat waits 1 s after the exit for a completion record still in flight; here every byte of stdout has
        # been read before run() returns, so nothing can still arrive and the exit is handled at once.
        shown = signal_name(status) if status < 0 else str(status)
        run.meta(f"Child exited with code: {shown}")
        job = run.job
        if job.get("complete"):
            return
        if status > 0:
            job.update(code=status, description=f"Child exited with code: {status}")
        elif status < 0:
            # ⚠ xySat reports a signal death as a 'warning' (its exit code is null); a killed job failed.
            job.update(code=128 - status, description=f"Child was killed by signal: {shown}")
        else:
            job.update(code="warning", description="Process exited without reporting job completion.", unknown=1)

    def abort(self, job_id: str, reason: str) -> bool:
        """Abort a running job (code 'abort'); False when it is not running here or already complete."""
        run = self.runs.get(job_id)
        if run is None or run.job.get("complete"):
            return False
        run.meta("Aborting job on server")
        run.job.update(code="abort", description=str(reason)[:1024] or "Aborted", complete=True)
        self.events.changed(run)
        plugin = run.plugin
        mode = run.job.get("kill") or "all"
        if plugin is None:
            return True
        if mode == "none" and not isinstance(plugin, BuiltinPlugin):
            run.muted = True
            run.detached.set()
        else:
            run.killer = asyncio.create_task(self._kill(run, plugin, everything=mode != "parent"))
        return True

    async def _kill(self, run: JobRun, plugin: Plugin, everything: bool) -> None:
        what = "all job processes" if everything else "job process"
        run.meta(f"Killing {what}: {plugin.pid or 'built-in'}")
        plugin.signal(signal.SIGTERM, everything)
        if await self._gone(plugin, everything, self.settings.kill_timeout):
            return
        run.meta(f"Child did not exit, killing harder: {plugin.pid}")
        plugin.signal(signal.SIGKILL, everything)
        await self._gone(plugin, everything, 5.0)

    @staticmethod
    async def _gone(plugin: Plugin, everything: bool, within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while plugin.alive(everything):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def forget(self, run: JobRun) -> None:
        """The job is finished and reported: free its output and working directory."""
        self.runs.pop(run.id, None)
        run.log.discard()
        _remove_dir(run.cwd)

    def abort_all(self, reason: str) -> None:
        for job_id in list(self.runs):
            self.abort(job_id, reason)

    async def close(self) -> None:
        """Stop watching every job (the processes of jobs still running are killed)."""
        for run in list(self.runs.values()):
            if run.plugin is not None and run.task is not None and not run.task.done():
                run.plugin.signal(signal.SIGKILL, True)
        if self._orphans:  # processes left running (kill mode none): a moment for those already ending
            await asyncio.wait(set(self._orphans), timeout=1.0)
        tasks = [r.task for r in self.runs.values() if r.task is not None] + list(self._orphans)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _remove_dir(path: Path) -> None:
    """Remove a job directory: most are empty (one rmdir), the rest go with everything in them."""
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
