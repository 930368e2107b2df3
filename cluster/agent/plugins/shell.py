"""`[shell-plugin]`: the job's `script` param written to a file and run as the job's process.

As xySat's shell plugin: a shebang line is honoured (else /bin/sh runs it); a line that is only `NN%` becomes
progress; `annotate` puts a timestamp before each log line; the job ends with the script's exit code and
"Script exited with code: N" plus the first line of stderr; stderr also comes back as an "Error Output" html
block unless the script sent html itself; `pass` hands the job's input data on as its output data. Records
the script prints still work. The script is the job's process itself (no wrapper), so kill modes reach it.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import time
from typing import Any

from ..output import LineSplitter, parse_record
from ..plugin import Launch, ProcessPlugin, Sink, signal_name

_PERCENT = re.compile(rb"^\s*(\d+)%\s*$")
STDERR_KEPT = 32 * 1024


class ShellPlugin(ProcessPlugin):
    """Runs `params.script`."""

    def __init__(self) -> None:
        super().__init__([])

    async def run(self, launch: Launch, sink: Sink) -> int:
        params = launch.params
        script = params.get("script")
        if not isinstance(script, str) or not script.strip():
            sink.record({"xy": 1, "code": 1, "description": "Shell Plugin Error: No script was given."})
            return 1
        job_input = launch.job.get("input")
        data = job_input.get("data") if isinstance(job_input, dict) else None
        if (params.get("pass") or params.get("json")) and data:
            sink.record({"xy": 1, "data": data})
        path = self._write(launch, script.replace("\r\n", "\n"))
        argv = [str(path)] if script.startswith("#!") else ["/bin/sh", str(path)]
        try:
            return await self._run_script(launch, sink, argv)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    @staticmethod
    def _write(launch: Launch, script: str) -> Any:
        directory = launch.temp_dir / "scripts"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"script-{launch.job.get('id')}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as handle:
            handle.write(script)
        if launch.user is not None:
            os.chown(path, launch.user, launch.group if launch.group is not None else -1)
        return path

    async def _run_script(self, launch: Launch, sink: Sink, argv: list[str]) -> int:
        filt = _Filter(sink, bool(launch.params.get("annotate")))
        process = await self.spawn(launch, sink, argv)
        await self.feed_stdin(process, launch.stdin)
        await self.pump(process, filt.stdout, filt.stderr)
        filt.end()
        status = await process.wait()
        code: int = status if status >= 0 else 128 - status
        shown = str(status) if status >= 0 else signal_name(status)
        record: dict[str, Any] = {"xy": 1, "complete": True, "code": code,
                                  "description": f"Script exited with code: {shown}" if code else ""}  # fmt: skip
        errors = filt.errors.decode("utf-8", errors="replace")
        if errors.strip():
            if not filt.sent_html:
                record["html"] = {"title": "Error Output", "content": f"<pre>{html.escape(errors.strip())}</pre>"}
            first = errors.strip().split("\n", 1)[0]
            if code and len(first) < 256:
                record["description"] += ": " + first
        sink.record(record)
        return status


class _Filter:
    """The script's stdout on its way to the job: `NN%` lines become progress, the rest may get a timestamp."""

    def __init__(self, sink: Sink, annotate: bool) -> None:
        self.sink = sink
        self.annotate = annotate
        self.splitter = LineSplitter()
        self.errors = bytearray()
        self.sent_html = False

    def stdout(self, data: bytes) -> None:
        for line, whole in self.splitter.feed(data):
            self._line(line, whole)

    def end(self) -> None:
        for line, whole in self.splitter.close():
            self._line(line, whole)

    def _line(self, line: bytes, whole: bool) -> None:
        if whole:
            percent = _PERCENT.match(line)
            if percent:
                self.sink.record({"xy": 1, "progress": max(0, min(100, int(percent.group(1)))) / 100})
                return
            record = parse_record(line)
            if record is not None:
                self.sent_html = self.sent_html or bool(record.get("html"))
                self.sink.stdout(line)
                return
        if self.annotate:
            line = time.strftime("[%Y-%m-%d %H:%M:%S] ").encode() + line
        self.sink.stdout(line)

    def stderr(self, data: bytes) -> None:
        if len(self.errors) < STDERR_KEPT:
            self.errors += data[: STDERR_KEPT - len(self.errors)]
        self.sink.stderr(data)
