"""Monitor plugins (`commands` of `joined` / `update`), run as xySat's runMonitorCommand runs them.

Before each minute sample every plugin whose `groups` is empty or shares one with this server runs (at most
`concurrency` at once), and its output goes in ServerMonitorData `commands[<plugin id>]`; `quick` ones also run
for each quickmon, with a 1 s timeout. One run:

- argv: `command` split as a job's (command.py: program up to the first whitespace, the rest shell-split with
  `$VAR` expanded from the environment), plus the path of `script` written to `DATA/monitor-plugins/<id>`;
- environment: the agent's without its credentials (environ.clean_env) plus the plugin's secrets (`sec`), and
  USER/USERNAME/HOME/SHELL when `uid` names another account; working directory `cwd` or the system temp dir;
  stdin closed at once;
- a process group of its own, killed (SIGKILL) on `timeout` (default 10 s; the result is then "Error: Command
  timed out after N seconds"), when its output passes 1 MiB, or when it has exited but something it started
  still holds its output open;
- result: stdout trimmed; with `format: json` and a `{` or `[` in it, the parsed value, or "JSON Parser Error:
  ..." (⚠ `format: xml` is passed on as trimmed text: xyOps' XML parser is not reproduced). A plugin that cannot
  start gives "Error: Could not execute command: ..." instead.

Secrets are never logged: only plugin ids and outcomes are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .command import SetupError, account, split_command, write_script
from .environ import clean_env, nice_string

log = logging.getLogger("podium.agent.monitor")

DEFAULT_TIMEOUT = 10.0
QUICK_TIMEOUT = 1.0
MAX_TIMEOUT = 300.0
MAX_OUTPUT = 1024 * 1024  # bytes of stdout (xySat's "sanity e-brake")
MAX_STDERR = 1024 * 1024
MAX_PLUGINS = 100
MAX_SCRIPT = 1024 * 1024
MAX_COMMAND = 4096
DRAIN = 0.5  # s the output may still flow after the plugin exited
READ = 64 * 1024
_ID = re.compile(r"^[\w\-.]{1,128}$")


@dataclass(frozen=True)
class MonitorPlugin:
    """One monitor plugin as the conductor sent it (validated and bounded)."""

    id: str
    command: str
    script: str = ""
    format: str = "text"
    groups: tuple[str, ...] = ()
    quick: bool = False
    timeout: float = DEFAULT_TIMEOUT
    cwd: str = ""
    uid: Any = ""
    gid: Any = ""
    sec: Mapping[str, str] = field(default_factory=dict, repr=False)

    def runs_on(self, groups: Sequence[str]) -> bool:
        return not self.groups or any(g in self.groups for g in groups)


def parse_plugins(commands: Any) -> list[MonitorPlugin]:
    """The usable entries of a `commands` list (others are skipped: no id, no command, or too large)."""
    out: list[MonitorPlugin] = []
    for entry in commands if isinstance(commands, list) else []:
        if len(out) >= MAX_PLUGINS:
            break
        if not isinstance(entry, Mapping):
            continue
        plugin_id, command, script = entry.get("id"), entry.get("command"), entry.get("script") or ""
        if not (isinstance(plugin_id, str) and _ID.match(plugin_id) and plugin_id not in (".", "..")):
            continue
        if not (isinstance(command, str) and command.strip() and len(command) <= MAX_COMMAND):
            continue
        if not isinstance(script, str) or len(script) > MAX_SCRIPT:
            continue
        try:
            timeout = float(entry.get("timeout") or DEFAULT_TIMEOUT)
        except (TypeError, ValueError):
            timeout = DEFAULT_TIMEOUT
        groups = entry.get("groups")
        sec = entry.get("sec")
        cwd = entry.get("cwd")
        out.append(MonitorPlugin(
            id=plugin_id, command=command, script=script, format=str(entry.get("format") or "text"),
            groups=tuple(str(g) for g in groups[:1000]) if isinstance(groups, list) else (),
            quick=bool(entry.get("quick")), timeout=min(max(timeout, 0.1), MAX_TIMEOUT),
            cwd=cwd if isinstance(cwd, str) else "", uid=entry.get("uid") or "", gid=entry.get("gid") or "",
            sec={str(k): nice_string(v) for k, v in sec.items()} if isinstance(sec, Mapping) else {},
        ))  # fmt: skip
    return out


def shape_result(text: str, fmt: str) -> Any:
    """The plugin's output as xySat hands it on: parsed JSON (format json), else trimmed text."""
    if fmt == "json" and re.search(r"[{\[]", text):
        try:
            value = json.loads(text)
        except ValueError as exc:
            return f"JSON Parser Error: {exc}"
        return value if value else text  # (as xySat: a falsy parse keeps the text)
    return text.strip()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _finish(proc: asyncio.subprocess.Process, readers: asyncio.Future[Any], limit: float) -> bool:
    """Wait for the plugin to exit within `limit` s and for its output; True when it had to be killed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    # Process.wait() also waits for its output to close, which something it left running may hold open: its
    # return code, set at the exit, is watched instead while output flows.
    while proc.returncode is None and (left := deadline - loop.time()) > 0:
        if readers.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), left)
            break
        await asyncio.wait({readers}, timeout=min(0.05, left))
    timed_out = proc.returncode is None
    if timed_out:
        _kill_group(proc.pid)
    try:
        await asyncio.wait_for(asyncio.shield(readers), DRAIN)
    except TimeoutError:  # its output is held open by something it left running: the group goes
        _kill_group(proc.pid)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):  # (one that left the group is let go)
            await asyncio.wait_for(readers, DRAIN)
    if timed_out:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), DRAIN)
    return timed_out


class MonitorPlugins:
    """The conductor's monitor plugins on this agent, and running them."""

    def __init__(self, data_dir: Path, environ: Mapping[str, str], concurrency: int | None = None) -> None:
        self.dir = data_dir / "monitor-plugins"
        self.environ = dict(environ)
        self.concurrency = max(1, concurrency or os.cpu_count() or 1)
        self.plugins: list[MonitorPlugin] = []

    def set(self, commands: Any) -> None:
        """Take a new `commands` list: write the scripts, remove those of plugins gone."""
        plugins = parse_plugins(commands)
        keep = set()
        for plugin in plugins:
            if plugin.script:
                try:
                    write_script(self.dir, plugin.id, plugin.script)
                    keep.add(plugin.id)
                except (OSError, SetupError) as exc:
                    log.warning("monitor_plugin_script_failed plugin=%s error=%s", plugin.id, exc)
        with contextlib.suppress(OSError):
            for path in self.dir.iterdir():
                if path.name not in keep and not path.name.startswith("."):
                    path.unlink(missing_ok=True)
        self.plugins = plugins

    def find(self, plugin_id: Any) -> MonitorPlugin | None:
        return next((p for p in self.plugins if p.id == plugin_id), None)

    async def run_all(self, groups: Sequence[str], quick: bool = False) -> dict[str, Any]:
        """{plugin id: result} of every plugin for this server (quick ones only, with the 1 s timeout, if
        `quick`)."""
        wanted = [p for p in self.plugins if p.runs_on(groups) and (p.quick or not quick)]
        gate = asyncio.Semaphore(self.concurrency)
        results: dict[str, Any] = {}

        async def one(plugin: MonitorPlugin) -> None:
            async with gate:
                results[plugin.id], _ = await self.run(plugin, QUICK_TIMEOUT if quick else None)

        await asyncio.gather(*(one(p) for p in wanted))
        return {p.id: results[p.id] for p in wanted}

    async def run(self, plugin: MonitorPlugin, timeout: float | None = None) -> tuple[Any, str]:
        """(result, stderr) of one run."""
        limit = timeout or plugin.timeout
        try:
            argv, env, cwd, user = self._prepare(plugin)
        except SetupError as exc:
            return f"Error: {exc}", ""
        extra: dict[str, Any] = {}
        if user.switch:
            extra.update(user=user.uid, group=user.gid, extra_groups=user.groups())
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env, start_new_session=True, **extra,
            )  # fmt: skip
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.info("monitor_plugin_failed plugin=%s error=%s", plugin.id, exc)
            return f"Error: Could not execute command: {argv[0]}: {exc}", ""
        out, err = bytearray(), bytearray()

        async def pump(stream: asyncio.StreamReader | None, buf: bytearray, cap: int, hard: bool) -> None:
            assert stream is not None
            while chunk := await stream.read(READ):
                buf += chunk[: max(0, cap - len(buf))]
                if hard and len(buf) >= cap:
                    _kill_group(proc.pid)  # too much output: stopped, what came so far is the result

        readers = asyncio.ensure_future(asyncio.gather(pump(proc.stdout, out, MAX_OUTPUT, True),
                                                       pump(proc.stderr, err, MAX_STDERR, False)))  # fmt: skip
        timed_out = await _finish(proc, readers, limit)
        stderr = err.decode(errors="replace")
        if timed_out:
            log.info("monitor_plugin_timeout plugin=%s seconds=%s", plugin.id, limit)
            return f"Error: Command timed out after {limit:g} seconds", stderr
        return shape_result(out.decode(errors="replace"), plugin.format), stderr

    def _prepare(self, plugin: MonitorPlugin) -> tuple[list[str], dict[str, str], str, Any]:
        user = account({"uid": plugin.uid, "gid": plugin.gid})
        env = clean_env(self.environ, os.getcwd())
        env.update(plugin.sec)
        if user.switch:
            env.update(USER=user.username, USERNAME=user.username, HOME=user.home, SHELL=user.shell)
        argv = split_command(plugin.command, env)
        if plugin.script:
            argv.append(str(write_script(self.dir, plugin.id, plugin.script)))
        cwd = plugin.cwd if plugin.cwd and os.path.isdir(plugin.cwd) else tempfile.gettempdir()
        return argv, env, cwd, user
