"""From a job to what to run: the argv of its command, its script file, the account it runs as.

Mirrors xySat's launchJob: a command with whitespace is the program plus arguments split like a shell would,
with `$VAR` / `${VAR}` expanded from the job's environment (not inside single quotes); a plugin `script` is
written to `DATA/plugins/<plugin id>` and its path appended; `uid` / `gid` name the account (name or number).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTIN = re.compile(r"^\[([\w\-]+)\]$")
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_SINGLE = re.compile(r"('[^']*')")
_PLUGIN_ID = re.compile(r"^[\w\-.]{1,128}$")


class SetupError(Exception):
    """The job cannot start: it finishes with code 1 and this description, before anything is spawned."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """$VAR and ${VAR} from env (unknown: empty), except inside single quotes."""
    parts = _SINGLE.split(text)
    return "".join(
        part if part.startswith("'") and part.endswith("'") and len(part) > 1
        else _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), part)
        for part in parts
    )  # fmt: skip


def split_command(command: str, env: Mapping[str, str]) -> list[str]:
    """The argv of a job command: the program is everything up to the first whitespace, as xySat takes it."""
    command = command.strip()
    if not command:
        raise SetupError("Plugin Error: Job has no command")
    head = re.split(r"\s+", command, maxsplit=1)
    program, rest = head[0], head[1] if len(head) > 1 else ""
    try:
        args = shlex.split(expand(rest, env)) if rest else []
    except ValueError as exc:
        raise SetupError(f"Plugin Error: Cannot parse command: {exc}") from None
    return [program, *args]


def write_script(plugins_dir: Path, plugin_id: Any, script: str) -> Path:
    """The plugin's script as an executable file (0700), replaced atomically only when it changed."""
    if not isinstance(plugin_id, str) or not _PLUGIN_ID.match(plugin_id) or plugin_id in (".", ".."):
        raise SetupError(f"Plugin not found: {plugin_id}")
    plugins_dir.mkdir(parents=True, exist_ok=True)
    path = plugins_dir / plugin_id
    data = script.replace("\r\n", "\n").encode()
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return path
    fd, tmp = tempfile.mkstemp(dir=plugins_dir, prefix=".script-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o700)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


@dataclass(frozen=True)
class Account:
    """The account a job runs as; `switch` is False when that is the agent's own."""

    uid: int
    gid: int
    username: str
    home: str
    shell: str
    switch: bool

    def groups(self) -> list[int]:
        """The account's supplementary groups (a job must not keep the agent's)."""
        try:
            return os.getgrouplist(self.username, self.gid)
        except OSError:
            return [self.gid]

    def env(self) -> dict[str, str]:
        return {"username": self.username, "home": self.home, "shell": self.shell}


def _user(value: Any) -> pwd.struct_passwd:
    try:
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return pwd.getpwuid(int(value))
        return pwd.getpwnam(str(value))
    except (KeyError, OverflowError, ValueError):
        raise SetupError(f"Plugin Error: User does not exist: {value}") from None


def account(job: Mapping[str, Any]) -> Account:
    """The account for `job.uid` / `job.gid`; the agent's own when neither is set."""
    own = os.getuid()
    uid_value = job.get("uid")
    if uid_value in (None, ""):
        try:
            entry: pwd.struct_passwd | None = pwd.getpwuid(own)
        except KeyError:
            entry = None
    else:
        entry = _user(uid_value)
    uid = entry.pw_uid if entry else own
    gid = entry.pw_gid if entry else os.getgid()
    gid_value = job.get("gid")
    if gid_value not in (None, ""):
        try:
            group = grp.getgrgid(int(gid_value)) if str(gid_value).isdigit() else grp.getgrnam(str(gid_value))
        except (KeyError, OverflowError, ValueError):
            raise SetupError(f"Plugin Error: Group does not exist: {gid_value}") from None
        gid = group.gr_gid
    return Account(
        uid=uid, gid=gid, username=entry.pw_name if entry else str(uid), home=entry.pw_dir if entry else "/",
        shell=entry.pw_shell if entry else "/bin/sh", switch=uid != own or gid != os.getgid(),
    )  # fmt: skip
