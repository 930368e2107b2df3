"""`[docker-plugin]`: the job run in a container, as `docker run -i ...` built from the plugin's params.

The command line is xySat's: `--rm`, `--init`, `--cpus`, `--memory`, `--network`, `--name`, extra arguments
(shell-split, with $VARS), `image:version`, then the container command (shell-split). Stdin gets the job as
JSON (run mode "Send Job JSON") or the `script` param. Without a docker CLI the job fails with a clear reason.
"""

from __future__ import annotations

import shlex
import shutil
import socket
from collections.abc import Mapping
from typing import Any

from ..command import expand
from ..plugin import Launch, ProcessPlugin, Sink, signal_name
from ..template import fill


def _set(value: Any) -> bool:
    return value not in (None, "", "0", 0, False)


def docker_argv(docker: str, params: Mapping[str, Any], job: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The `docker run` command line for these params (ValueError: a param that cannot be parsed)."""
    argv = [docker, "run", "-i"]
    if _set(params.get("cont_rm")):
        argv.append("--rm")
    if _set(params.get("cont_init")):
        argv.append("--init")
    if _set(params.get("cont_cpus")):
        argv += ["--cpus", str(params["cont_cpus"])]
    if _set(params.get("cont_mem")):
        argv += ["--memory", "".join(str(params["cont_mem"]).split())]
    if _set(params.get("cont_net")):
        argv += ["--network", str(params["cont_net"])]
    if _set(params.get("cont_name")):
        argv += ["--name", fill(str(params["cont_name"]), job)]
    if _set(params.get("cont_extras")):
        argv += shlex.split(expand(str(params["cont_extras"]), env))
    image = str(params.get("image_name") or "").strip()
    if not image:
        raise ValueError("image_name: no image was given")
    version = str(params.get("image_ver") or "").strip()
    argv.append(f"{image}:{version}" if version else image)
    if _set(params.get("cont_cmd")):
        argv += shlex.split(str(params["cont_cmd"]))
    return argv


class DockerPlugin(ProcessPlugin):
    """Runs the job in a container through the docker CLI."""

    def __init__(self, search_path: str | None = None) -> None:
        super().__init__([])
        self.search_path = search_path  # where to look for the CLI (default: the job's PATH)

    async def run(self, launch: Launch, sink: Sink) -> int:
        docker = shutil.which("docker", path=self.search_path or launch.env.get("PATH"))
        if docker is None:
            sink.record({"xy": 1, "code": 1, "description": f"Unable to locate docker CLI on {socket.gethostname()}"})
            return 1
        try:
            argv = docker_argv(docker, launch.params, launch.job, launch.env)
        except ValueError as exc:
            sink.record({"xy": 1, "code": 1, "description": f"Docker Plugin Error: {exc}"})
            return 1
        if _set(launch.params.get("verbose")):
            sink.stdout(f"Launching docker: {shlex.join(argv)}\n".encode())
        process = await self.spawn(launch, sink, argv)
        json_mode = "JSON" in str(launch.params.get("run_mode") or "Send Job JSON")
        await self.feed_stdin(process, launch.stdin if json_mode else str(launch.params.get("script") or "").encode()
                              + b"\n")  # fmt: skip
        await self.pump(process, sink.stdout, sink.stderr)
        status = await process.wait()
        code = status if status >= 0 else 128 - status
        shown = str(status) if status >= 0 else signal_name(status)
        sink.record({"xy": 1, "code": code, "description": f"Docker exited with code: {shown}" if code else ""})
        return status
