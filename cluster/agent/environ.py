"""The environment a plugin process starts with, built as xySat builds it (execution reference 1.6).

In order, later wins: the agent's own environment without its credentials (`XYOPS_*`, `XYSAT_*`,
`SATELLITE_*`, `PODIUM_*`) and with the usual bin directories on PATH; the agent's `job_env`; the job's
`env`; the job's secrets. Then the job variables (`XYOPS`, `JOB_ID`, `JOB_LOG`, `JOB_NOW`, `JOB_BASE_URL`,
`PWD`), the account the job runs as (`USER`, `USERNAME`, `HOME`, `SHELL`), every plugin param under its
name with non-word characters turned into `_`, and `workflow_<k>`, `workflow_data_<k>`, `server_data_<k>`
and `data_<k>` from the workflow params, the held workflow and server data and the job input's `data`.
Values are text as JavaScript's `String()` writes it; objects and arrays as compact JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

_NON_WORD = re.compile(r"\W+", re.ASCII)
_PRIVATE = re.compile(r"^(XYOPS_|XYSAT_|SATELLITE_|PODIUM_)")
_SANE_PATHS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")


def nice_string(value: Any) -> str:
    """A value as text the way xySat passes it on: JSON for objects, arrays and null, else String()."""
    if value is None or isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))  # JavaScript prints 3.0 as "3"
    return str(value)


def env_name(key: str) -> str:
    return _NON_WORD.sub("_", key)


def clean_env(environ: Mapping[str, str], cwd: str) -> dict[str, str]:
    """The agent's environment for a plugin: no agent credentials, and PATH with the usual bin directories."""
    env = {k: v for k, v in environ.items() if not _PRIVATE.match(k)}
    paths = [os.path.join(cwd, "bin"), os.path.join(env.get("HOME") or "/root", ".local", "bin"),
             *(env["PATH"].split(":") if env.get("PATH") else []), *_SANE_PATHS]  # fmt: skip
    env["PATH"] = ":".join(dict.fromkeys(p for p in paths if p))
    return env


def plugin_env(
    base: Mapping[str, str],
    job: Mapping[str, Any],
    *,
    details: Mapping[str, Any],
    secrets: Mapping[str, Any],
    job_env: Mapping[str, Any],
    version: str,
    log_file: str,
    base_url: str,
    account: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one job's plugin process. `base` is clean_env()'s result; `account` the user the
    job runs as (`USER`, `HOME`, `SHELL`, looked up by the caller)."""
    env = dict(base)
    for layer in (job_env, job.get("env") or {}, secrets):
        env.update({str(k): nice_string(v) for k, v in layer.items()})
    env.update(XYOPS=version, JOB_ID=str(job.get("id", "")), JOB_LOG=log_file, JOB_NOW=nice_string(job.get("now", "")),
               JOB_BASE_URL=base_url, PWD=str(job.get("cwd") or ""))  # fmt: skip
    if account:
        env.update(USER=account["username"], USERNAME=account["username"], HOME=account["home"],
                   SHELL=account["shell"])  # fmt: skip
    workflow = job.get("workflow")
    workflow = workflow if isinstance(workflow, Mapping) else {}
    job_input = details.get("input")
    input_data = job_input.get("data") if isinstance(job_input, Mapping) else None
    for prefix, values in (("", job.get("params")), ("workflow_", workflow.get("params")),
                           ("workflow_data_", details.get("workflowData")),
                           ("server_data_", details.get("serverData")), ("data_", input_data)):  # fmt: skip
        if isinstance(values, Mapping):
            env.update({prefix + env_name(str(k)): nice_string(v) for k, v in values.items()})
    return env
