"""`[test-plugin]`: a job that reports progress for `duration` seconds and ends as `action` says.

xySat's test plugin: `duration` is seconds or a random `low-high` range; `action` is Success (with perf,
table, html and data), Error (code 999), Warning, Critical, Abort or Crash (dies with exit code 1); `upload`
makes a report file and pushes it to the job's files; `burn` keeps a CPU busy in a child process (inside the
agent it would stall every other job); `custom` comes back in the output data. `network` is not supported.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import time
from typing import Any

from ..plugin import BuiltinPlugin, Launch, Sink, say

TICK = 0.15
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_ENDINGS: dict[str, tuple[Any, str]] = {
    "error": (999, "Simulating an error message here.  Something went wrong!"),
    "warning": ("warning", "Simulating a warning message here.  Something is concerning!"),
    "critical": ("critical", "Simulating a critical error message here.  Something is VERY wrong!"),
    "abort": ("abort", "Simulating an abort message here."),
}


def duration_of(value: Any) -> float:
    """Seconds to run: a number, or a random whole number within `low-high`; at least one tick."""
    text = str(value if value is not None else "")
    match = _RANGE.match(text)
    if match:
        low, high = sorted((int(match.group(1)), int(match.group(2))))
        return float(random.randint(low, high))
    try:
        seconds = float(text)
    except ValueError:
        seconds = 1.0
    return seconds if 0 < seconds < 86400 * 7 else 1.0


class TestPlugin(BuiltinPlugin):
    """Simulates a job."""

    __test__ = False  # not a pytest class

    async def work(self, launch: Launch, sink: Sink) -> int:
        params = launch.params
        say(sink, "Job start!")
        say(sink, "Job Params: " + json.dumps(params, separators=(",", ":")))
        say(sink, f"The current working directory is: {launch.cwd}")
        say(sink, "The current date/time for our job is: " + time.ctime(float(launch.job.get("now") or time.time())))
        job_input = launch.job.get("input")
        if isinstance(job_input, dict) and job_input.get("data"):
            say(sink, "Received input data: " + json.dumps(job_input["data"], separators=(",", ":")))
        duration = duration_of(params.get("duration"))
        burner = await self._burn(launch) if params.get("burn") else None
        started = time.monotonic()
        try:
            while True:
                progress = min((time.monotonic() - started) / duration, 1.0)
                sink.record({"xy": 1, "progress": progress})
                if progress >= 1.0:
                    break
                await asyncio.sleep(min(TICK, max(0.0, duration - (time.monotonic() - started))))
        finally:
            if burner is not None and burner.returncode is None:
                burner.kill()
                await burner.wait()
        say(sink, "\nWe're done!")
        if params.get("upload"):
            name = f"sample-report-{launch.job.get('id')}.txt"
            (launch.cwd / name).write_text("This is a sample text report from the test plugin.\n")
            sink.record({"xy": 1, "push": {"files": [{"path": name, "delete": True}]}})
        return self._finish(launch, sink, str(params.get("action") or "Success").lower(), duration)

    @staticmethod
    async def _burn(launch: Launch) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", "while :; do :; done", cwd=launch.cwd, env=launch.env, start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    @staticmethod
    def _finish(launch: Launch, sink: Sink, action: str, duration: float) -> int:
        perf = {"db_query": round(random.uniform(0, duration * 0.06), 3),
                "http_post": round(random.uniform(duration * 0.16, duration * 0.2), 3)}  # fmt: skip
        if action == "crash":
            sink.stderr(b"Simulating a crash...\nError: Test Crash\n")
            return 1
        if action in _ENDINGS:
            code, description = _ENDINGS[action]
            sink.stdout(f"Simulating a{'n' if action in ('error', 'abort') else ''} {action} response.\n".encode())
            sink.record({"xy": 1, "complete": True, "code": code, "description": description, "perf": perf})
            return 0
        sink.stdout(b"Simulating a successful response.\n")
        table = {"title": "Sample Job Stats", "header": ["IP Address", "Count"],
                 "rows": [["62.121.210.2", 138], ["97.247.105.50", 84]],
                 "caption": "An example stats table a plugin can make."}  # fmt: skip
        report = {"title": "Sample Job Report", "content": "<pre>A sample report a plugin can make.</pre>"}
        data = {"text": "This is some sample data to pass to the next job!", "hostname": socket.gethostname(),
                "pid": os.getpid(), "random": round(random.random(), 3),
                "obj": {"foo": 1, "bar": None, "bool": True}, "custom": launch.params.get("custom")}  # fmt: skip
        sink.record({"xy": 1, "complete": True, "code": 0, "description": "Success!", "perf": perf,
                     "table": table, "html": report, "data": data})  # fmt: skip
        return 0
