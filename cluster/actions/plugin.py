"""Action plugins (xyOps docs/plugins.md "Action Plugins"): a command the conductor runs for a job or alert action.

The plugin's `command` (plus its `script`, written to a file as the agent does for event plugins) runs in a
process group of its own, with the agent's clean environment (no PODIUM_* credentials), the plugin's secrets,
`XYOPS` / `XYOPS_BASE_URL`, and every non-object param as a variable (`$NAME` in a value expands from the
environment). It reads one JSON line on stdin: the payload (JobHookData or AlertHookData) with `xy: 1`,
`type: "action"`, `condition`, `params`, `secrets` and `base_url`.

The result is the first stdout line that is an XYWP record with a `code` (`{"xy": 1, "code": 0, "description":
"...", "details": "markdown"}`); every other line, and stderr, goes into the details as text. Without such a record
the exit status decides (xyOps does the same). Differences from xyOps, on purpose:
- xyOps parses only the last stdout line, and ignores a record when the exit status is not 0; here the record wins
  (it is the plugin's own statement), and the exit status is shown in the details;
- a record printed before a timeout stands: the process is still killed, and the details say so.
Bounds: `timeout_s` (default 60 s; then SIGTERM to the group, SIGKILL after a short grace) and 1 MB of output
(then the group is killed at once, as Node's maxBuffer does for xyOps).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from subprocess import SubprocessError
from typing import Any

from cluster import __version__
from cluster.agent.command import SetupError, account, split_command, write_script
from cluster.agent.environ import clean_env, env_name, nice_string
from cluster.agent.output import LineSplitter, parse_record
from cluster.agent.plugin import signal_name

from .result import Outcome, clip_bytes, one_line

DEFAULT_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 3600.0
MAX_OUTPUT = 1024 * 1024  # bytes of stdout and stderr together
KILL_GRACE_S = 2.0  # SIGTERM, then SIGKILL
DRAIN_S = 2.0  # after a kill, how long the pipes may take to close (a process that left the group holds them)
READ_SIZE = 64 * 1024
SHOWN_OUTPUT = 12 * 1024  # bytes of output, and of stderr, quoted in the details
SHOWN_DETAILS = 8 * 1024  # bytes of the plugin's own details
_VAR = re.compile(r"\$(\w+)")


def _fenced(title: str, text: str, cut: bool) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    note = " (cut)" if cut else ""
    return f"\n### {title}{note}:\n\n{fence}text\n{text.strip() or '(empty)'}\n{fence}\n"


class _Collector:
    """Output as it arrives: the result record, log text and stderr, within MAX_OUTPUT (past it: `on_over`)."""

    def __init__(self, on_over: Callable[[], None]) -> None:
        self.on_over = on_over
        self.splitter = LineSplitter(MAX_OUTPUT)
        self.result: dict[str, Any] | None = None
        self.log = bytearray()
        self.err = bytearray()
        self.total = 0
        self.over = False

    def _take(self, chunk: bytes) -> bool:
        if self.over:
            return False
        self.total += len(chunk)
        if self.total > MAX_OUTPUT:
            self.over = True
            self.on_over()
            return False
        return True

    def stdout(self, chunk: bytes) -> None:
        if self._take(chunk):
            for line, whole in self.splitter.feed(chunk):
                self._line(line, whole)

    def stderr(self, chunk: bytes) -> None:
        if self._take(chunk):
            self.err += chunk

    def close(self) -> None:
        for line, whole in self.splitter.close():
            self._line(line, whole)

    def _line(self, line: bytes, whole: bool) -> None:
        if whole and self.result is None:
            record = parse_record(line)
            if record is not None and "code" in record:
                self.result = record
                return
        self.log += line


def _code(value: Any) -> int | str:
    """A plugin's `code` as an action code: 0 for success (0, false, null, ""), else a number or one word."""
    if not value:
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else one_line(str(value), 64)
    return one_line(str(value), 64) if isinstance(value, str) else "plugin"


def _env(params: Mapping[str, Any], secrets: Mapping[str, Any], base_url: str, cwd: str) -> dict[str, str]:
    env = clean_env(os.environ, cwd)
    env.update({str(k): nice_string(v) for k, v in secrets.items()})
    env.update(XYOPS=__version__, XYOPS_BASE_URL=base_url)
    for key, value in params.items():
        if value is None or isinstance(value, dict | list):
            continue  # objects stay in the stdin document only (as xyOps)
        env[env_name(str(key))] = _VAR.sub(lambda m: env.get(m.group(1), ""), nice_string(value))
    return env


def _stdin(payload: Mapping[str, Any], params: Mapping[str, Any], secrets: Mapping[str, Any], base_url: str) -> bytes:
    doc = {k: v for k, v in payload.items() if k != "env"}
    action = payload.get("action")
    condition = payload.get("condition") or (action.get("condition") if isinstance(action, Mapping) else "")
    doc.update(xy=1, type="action", condition=condition or "", params=dict(params), secrets=dict(secrets),
               base_url=base_url)  # fmt: skip
    return json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n"


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


async def _feed(process: asyncio.subprocess.Process, data: bytes) -> None:
    stdin = process.stdin
    assert stdin is not None
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(data)
            await stdin.drain()
    finally:  # a pipe left open warns once the loop is gone (filterwarnings=error)
        stdin.close()


async def _pump(stream: asyncio.StreamReader | None, to: Callable[[bytes], None]) -> None:
    assert stream is not None
    while chunk := await stream.read(READ_SIZE):
        to(chunk)


def _refusal(plugin: Mapping[str, Any]) -> str:
    plugin_id = one_line(str(plugin.get("id") or ""), 128)
    if plugin.get("type", "action") != "action":
        return f"Plugin is not an action plugin: {plugin_id}"
    if not plugin.get("enabled", True):
        return f"Plugin is disabled: {plugin_id}"
    if not str(plugin.get("command") or "").strip():
        return f"Plugin has no command: {plugin_id}"
    return ""


async def run_action_plugin(plugin: Mapping[str, Any], *, params: Mapping[str, Any], payload: Mapping[str, Any],
                            timeout_s: float | None = None, secrets: Mapping[str, Any] | None = None,
                            base_url: str = "", scripts_dir: Path | None = None) -> Outcome:  # fmt: skip
    """Run an action plugin once and say how it went; never raises for a failing plugin. `timeout_s` defaults to
    the plugin's `timeout`, else 60 s. A `script` is written under `scripts_dir` (the node's data dir), or to a
    private temporary directory removed afterwards."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    refused = _refusal(plugin)
    if refused:
        return Outcome("plugin", refused)
    try:
        limit = float(timeout_s or plugin.get("timeout") or DEFAULT_TIMEOUT_S)
    except (TypeError, ValueError):
        limit = DEFAULT_TIMEOUT_S
    limit = min(max(limit, 0.001), MAX_TIMEOUT_S) if limit == limit else DEFAULT_TIMEOUT_S  # NaN: the default
    secrets = secrets or {}
    cwd = str(plugin.get("cwd") or tempfile.gettempdir())
    env = _env(params, secrets, base_url, cwd)
    try:
        line = _stdin(payload, params, secrets, base_url)
    except (ValueError, TypeError, RecursionError) as exc:
        return Outcome("plugin", f"The plugin's input cannot be written as JSON: {exc}")
    with contextlib.ExitStack() as stack:
        try:
            argv = split_command(str(plugin["command"]), env)
            if plugin.get("script"):
                folder = scripts_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="podium-")))
                argv.append(str(write_script(folder, plugin.get("id"), str(plugin["script"]))))
            who = account(plugin)
        except (SetupError, OSError) as exc:
            return Outcome("plugin", str(exc), elapsed_ms=round((loop.time() - started) * 1000, 1))
        extra: dict[str, Any] = {}
        if who.switch:
            extra.update(user=who.uid, group=who.gid, extra_groups=who.groups())
            env.update(USER=who.username, USERNAME=who.username, HOME=who.home, SHELL=who.shell)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                cwd=cwd, env=env, start_new_session=True, **extra,
            )  # fmt: skip
        except (OSError, ValueError, SubprocessError) as exc:
            return Outcome("plugin", f"Cannot run the plugin's command: {exc}",
                           elapsed_ms=round((loop.time() - started) * 1000, 1))  # fmt: skip
        status, timed_out, collector = await _talk(process, line, limit)
    outcome = _outcome(plugin, collector, status, timed_out, limit)
    outcome.elapsed_ms = round((loop.time() - started) * 1000, 1)
    return outcome


async def _talk(process: asyncio.subprocess.Process, line: bytes, limit: float) -> tuple[int | None, bool, _Collector]:
    """Feed stdin, collect output and wait, within `limit`; (exit status or None, timed out, collector)."""
    collector = _Collector(lambda: _kill_group(process.pid, signal.SIGKILL))
    pumps: list[Awaitable[Any]] = [_feed(process, line), _pump(process.stdout, collector.stdout),
                                   _pump(process.stderr, collector.stderr)]  # fmt: skip
    tasks = [asyncio.ensure_future(p) for p in pumps]
    exited = asyncio.ensure_future(process.wait())
    timed_out = False
    try:
        _, pending = await asyncio.wait([*tasks, exited], timeout=limit)
        if pending:
            timed_out = not exited.done()
            _kill_group(process.pid, signal.SIGTERM)
            await asyncio.wait([exited], timeout=KILL_GRACE_S)
            _kill_group(process.pid, signal.SIGKILL)  # the whole group, also when its leader has gone
            await asyncio.wait([*tasks, exited], timeout=DRAIN_S)
    finally:
        for task in (*tasks, exited):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, exited, return_exceptions=True)
        if process.returncode is None:
            _kill_group(process.pid, signal.SIGKILL)
        # The pipes' transport closes itself only once every pipe has ended; after a kill one may not have.
        transport = getattr(process, "_transport", None)
        if transport is not None:
            transport.close()
    collector.close()
    return process.returncode, timed_out, collector


def _outcome(plugin: Mapping[str, Any], out: _Collector, status: int | None, timed_out: bool, limit: float) -> Outcome:
    lines = [f"### Plugin Details:\n\n- **Plugin ID:** `{one_line(str(plugin.get('id') or ''), 128)}`",
             f"- **Plugin Title:** {one_line(str(plugin.get('title') or ''), 200)}"]  # fmt: skip
    if status is not None and status < 0:
        lines.append(f"- **Signal:** {signal_name(status)}")
    elif status is not None:
        lines.append(f"- **Exit Code:** {status}")
    if timed_out:
        lines.append(f"- **Timed out** after {limit:g} s: the process group was killed")
    if out.over:
        lines.append(f"- **Output over {MAX_OUTPUT // 1024 // 1024} MB:** the process group was killed")
    result = out.result
    if result is not None:
        code = _code(result.get("code"))
        description = str(result.get("description") or "")
        if result.get("details"):
            lines.append("\n" + clip_bytes(str(result["details"]).strip(), SHOWN_DETAILS, "\n(cut)") + "\n")
    elif timed_out:
        code, description = "plugin", f"Plugin timed out after {limit:g} s (killed)"
    elif out.over:
        code, description = "plugin", f"Plugin output passed {MAX_OUTPUT // 1024 // 1024} MB (killed)"
    elif status:
        code = "plugin"
        killed = status < 0
        description = f"Plugin was killed by {signal_name(status)}" if killed else f"Plugin exited with code {status}"
    else:
        code, description = 0, ""
    lines.insert(2, f"- **Result:** {'Success' if not code else 'Error'}")
    if not description:
        description = "Successfully ran the action plugin" if not code else f"Action plugin failed with code {code}"
    for title, data in (("Plugin Output", out.log), ("Plugin STDERR", out.err)):
        text = bytes(data).decode(errors="replace")
        if text.strip():
            lines.append(_fenced(title, clip_bytes(text, SHOWN_OUTPUT), len(data) > SHOWN_OUTPUT))
    return Outcome(code, description, "\n".join(lines) + "\n")
