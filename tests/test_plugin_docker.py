"""`[docker-plugin]`: the docker command line from params, and a clean failure where there is no docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.agent.plugins import BUILTINS
from cluster.agent.plugins.docker import DockerPlugin, docker_argv
from cluster.agent.runner import Runner, RunnerSettings
from tests.agentkit import Recorder, output, run_job

PARAMS = {"image_name": "ghcr.io/x/shell", "image_ver": "1.2", "cont_name": "job-{{id}}", "cont_cpus": "1.5",
          "cont_mem": "1 GB", "cont_net": "bridge", "cont_extras": "-e HOME=$HOME -v '/a b:/c'",
          "cont_cmd": "xyrun --fast", "cont_init": True, "cont_rm": True}  # fmt: skip


def test_the_command_line() -> None:
    argv = docker_argv("/usr/bin/docker", PARAMS, {"id": "j9"}, {"HOME": "/home/u"})
    assert argv == ["/usr/bin/docker", "run", "-i", "--rm", "--init", "--cpus", "1.5", "--memory", "1GB",
                    "--network", "bridge", "--name", "job-j9", "-e", "HOME=/home/u", "-v", "/a b:/c",
                    "ghcr.io/x/shell:1.2", "xyrun", "--fast"]  # fmt: skip


def test_off_switches_and_bad_params() -> None:
    argv = docker_argv("docker", {"image_name": "alpine", "cont_cpus": "0", "cont_mem": "0", "cont_rm": False},
                       {}, {})  # fmt: skip
    assert argv == ["docker", "run", "-i", "alpine"]
    with pytest.raises(ValueError, match="image_name"):
        docker_argv("docker", {"image_name": ""}, {}, {})
    with pytest.raises(ValueError):
        docker_argv("docker", {"image_name": "a", "cont_extras": "'unclosed"}, {}, {})


async def test_without_docker_the_job_fails_with_a_clear_reason(tmp_path: Path) -> None:
    events = Recorder()
    builtins = {**BUILTINS, "docker-plugin": lambda: DockerPlugin(search_path=str(tmp_path))}
    runner = Runner(RunnerSettings(data_dir=tmp_path / "agent"), events, builtins=builtins)
    run = await run_job(runner, events, {"command": "[docker-plugin]", "params": PARAMS})
    assert run.job["code"] == 1 and run.job["description"].startswith("Unable to locate docker CLI on ")


async def test_a_docker_cli_that_fails_ends_the_job_with_its_code(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text('#!/bin/sh\necho "args: $*"\necho no engine >&2\nexit 125\n')
    (fake / "docker").chmod(0o755)
    events = Recorder()
    builtins = {**BUILTINS, "docker-plugin": lambda: DockerPlugin(search_path=str(fake))}
    runner = Runner(RunnerSettings(data_dir=tmp_path / "agent"), events, builtins=builtins)
    run = await run_job(runner, events, {"command": "[docker-plugin]", "params": {**PARAMS, "verbose": True}})
    assert (run.job["code"], run.job["description"]) == (125, "Docker exited with code: 125")
    text = output(run)
    assert "Launching docker: " in text and "args: run -i --rm" in text and "no engine" in text
