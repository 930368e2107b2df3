"""`podium agent`: options, enrolment, and the agent's lifetime.

    podium agent --url URL [--url URL ...] (--api-key KEY | --token TOKEN [--server-id ID]) [--data-dir DIR]
                 [--hostname NAME] [--max-jobs N] [--kill-timeout S] [--log-level LEVEL]

Each option may also come from `PODIUM_AGENT_<NAME>` (e.g. PODIUM_AGENT_TOKEN, so a token need not be on a
command line; PODIUM_AGENT_URL may list several URLs separated by commas or spaces). A config error is one line
on stderr and exit status 2; an auth failure is exit status 1. For tests only, `--monitor-interval S`
(PODIUM_AGENT_MONITOR_INTERVAL) shortens the minute between `monitor` samples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .agent import Agent
from .conductor import CallError, Conductor, enrol
from .link import Link
from .logbuf import remove_stale
from .runner import Runner, RunnerSettings
from .state import State
from .sysinfo import default_hostname, hello_info

log = logging.getLogger("podium.agent")
ENV_PREFIX = "PODIUM_AGENT_"
_URL = re.compile(r"^https?://[^/\s?#]+/?$")


class ConfigError(Exception):
    """A bad option: one line for stderr."""


def version() -> str:
    try:
        return importlib.metadata.version("podium")
    except importlib.metadata.PackageNotFoundError:
        return "0"


@dataclass(frozen=True)
class AgentConfig:
    """The agent's options."""

    urls: tuple[str, ...]
    data_dir: Path = Path("agent-data")
    api_key: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    server_id: str | None = None
    hostname: str = field(default_factory=default_hostname)
    max_jobs: int = 0
    kill_timeout: float = 10.0
    log_level: str = "info"
    monitor_interval: float = 60.0  # s between `monitor` samples: shorter only for tests


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podium agent", description="run jobs for a Podium (or xyOps) cluster")
    parser.add_argument("--url", action="append", metavar="URL", help="a conductor base URL http(s)://host:port")
    parser.add_argument("--api-key", metavar="KEY", help="enrol with a key holding the add_servers privilege")
    parser.add_argument("--token", metavar="TOKEN", help="this server's token (sha256 of server id + secret)")
    parser.add_argument("--server-id", metavar="ID", help="this server's id (default: from the data dir)")
    parser.add_argument("--data-dir", metavar="DIR", help="config, job directories and spool (default ./agent-data)")
    parser.add_argument("--hostname", metavar="NAME", help="the name this server reports (default: the host's)")
    parser.add_argument("--max-jobs", metavar="N", help="jobs run at once (default 0 = no limit)")
    parser.add_argument("--kill-timeout", metavar="S", help="seconds from SIGTERM to SIGKILL on abort (default 10)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    parser.add_argument("--monitor-interval", help=argparse.SUPPRESS)  # tests only: seconds between samples
    return parser


def parse(argv: Sequence[str], env: Mapping[str, str]) -> AgentConfig:
    """Options from argv, else from PODIUM_AGENT_*; ConfigError names the option or variable at fault."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        raise ConfigError("bad command line (see podium agent --help)") from None

    def pick(name: str) -> tuple[str | None, str]:
        value = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        if value is not None:
            return value, flag
        var = ENV_PREFIX + name.upper()
        return env.get(var) or None, var

    urls: list[str] = list(args.url or [])
    where = "--url"
    if not urls and env.get(ENV_PREFIX + "URL"):
        urls, where = re.split(r"[\s,]+", env[ENV_PREFIX + "URL"].strip()), ENV_PREFIX + "URL"
    if not urls:
        raise ConfigError("--url: at least one conductor URL is needed")
    for url in urls:
        if not _URL.match(url):
            raise ConfigError(f"{where} {url[:200]!r}: must be http(s)://host[:port]")
    api_key, _ = pick("api_key")
    token, _ = pick("token")
    if api_key and token:
        raise ConfigError("--api-key and --token: give one of them")
    server_id, sid_where = pick("server_id")
    if server_id is not None and not re.fullmatch(r"[\w\-]{1,64}", server_id):
        raise ConfigError(f"{sid_where} {server_id[:80]!r}: must be 1-64 letters, digits, _ or -")
    data_dir, _ = pick("data_dir")
    hostname, host_where = pick("hostname")
    if hostname is not None and not re.fullmatch(r"[\w\-.]{1,253}", hostname):
        raise ConfigError(f"{host_where} {hostname[:80]!r}: not a host name")
    max_jobs, jobs_where = pick("max_jobs")
    kill, kill_where = pick("kill_timeout")
    interval, interval_where = pick("monitor_interval")
    level, level_where = pick("log_level")
    if level is not None and level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{level_where} {level!r}: must be debug, info, warning or error")
    return AgentConfig(
        urls=tuple(u.rstrip("/") for u in urls), data_dir=Path(data_dir or "agent-data"), api_key=api_key,
        token=token, server_id=server_id, hostname=hostname or default_hostname(),
        max_jobs=_number(max_jobs or "0", jobs_where, int, 0, 100_000),
        kill_timeout=_number(kill or "10", kill_where, float, 0, 3600), log_level=level or "info",
        monitor_interval=_number(interval or "60", interval_where, float, 1, 3600),
    )  # fmt: skip


def _number(value: str, where: str, kind: Any, low: float, high: float) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{where} {value[:40]!r}: must be a number") from None
    if not low <= number <= high:
        raise ConfigError(f"{where} {value!r}: must be from {low:g} to {high:g}")
    return number


def load_state(config: AgentConfig) -> State:
    try:
        state = State.load(config.data_dir)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.token:
        state.auth_token = config.token
        state.server_id = config.server_id or state.server_id
        if not state.server_id:
            raise ConfigError("--server-id: needed with --token when the data dir has no server id")
    elif not config.api_key and not (state.server_id and state.auth_token):
        raise ConfigError("--api-key or --token: the data dir has no credentials yet")
    return state


async def _enrol(config: AgentConfig, state: State, session: aiohttp.ClientSession) -> None:
    """Fetch a server id and token with the API key (retrying while no conductor answers)."""
    assert config.api_key
    delay = 1.0
    while True:
        for url in config.urls:
            try:
                reply = await enrol(session, url, config.api_key)
            except CallError as exc:
                if exc.code:
                    raise ConfigError(f"--api-key: enrolment refused: {exc}") from None
                log.warning("enrol_failed url=%s error=%s", url, exc)
                continue
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("enrol_failed url=%s error=%s", url, str(exc) or type(exc).__name__)
                continue
            state.server_id, state.auth_token = reply["server_id"], str(reply["auth_token"])
            hosts = reply.get("hosts")
            state.hosts = [str(h) for h in hosts][:100] if isinstance(hosts, list) else []
            if isinstance(reply.get("initial"), dict):
                state.config["initial"] = reply["initial"]  # sent with every hello, as xySat does
            state.save()
            log.info("enrolled server=%s", state.server_id)
            return
        await asyncio.sleep(delay)
        delay = min(30.0, delay * 2)


async def serve(config: AgentConfig, environ: Mapping[str, str] | None = None,
                stop: asyncio.Event | None = None) -> int:  # fmt: skip
    """Run the agent until `stop` is set (or, without one, SIGINT/SIGTERM) (0), or an auth failure (1).

    The programmatic entry point: `await serve(AgentConfig(urls=("http://127.0.0.1:5522",), token=...,
    server_id=..., data_dir=Path(...)), stop=event)`. Raises ConfigError for bad options or refused enrolment.
    """
    state = load_state(config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(config.data_dir)
    agent_version = version()
    session = aiohttp.ClientSession()
    try:
        if config.api_key and not (state.server_id and state.auth_token):
            await _enrol(config, state, session)
        conductor = Conductor(session, state.server_id, state.auth_token)
        settings = RunnerSettings(data_dir=config.data_dir, version=agent_version, kill_timeout=config.kill_timeout,
                                  max_jobs=config.max_jobs, environ=dict(environ or os.environ))  # fmt: skip
        info = hello_info(agent_version, config.hostname)
        initial = state.config.get("initial")
        agent = Agent(
            lambda events: Runner(settings, events, download=lambda f, d: conductor.download(
                agent.link.base_url or "", f, d)),
            lambda handler: Link(list(config.urls), state, config.hostname, info, handler, session,
                                 initial=initial if isinstance(initial, dict) else None),
            conductor, monitor_interval=config.monitor_interval,
        )  # fmt: skip
        return await _lifetime(agent, stop or asyncio.Event(), signals=stop is None)
    finally:
        await session.close()


def fast_child_watcher() -> None:
    """Python 3.11 watches each child with a thread of its own; a pidfd costs no thread (3.12+ does this)."""
    if sys.version_info >= (3, 12) or not sys.platform.startswith("linux"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


async def _lifetime(agent: Agent, stop: asyncio.Event, signals: bool) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM) if signals else ():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(agent.flusher()), asyncio.create_task(agent.ticker()),
             asyncio.create_task(agent.host.monitors()), asyncio.create_task(agent.host.quickmons())]  # fmt: skip
    link = asyncio.create_task(agent.link.run())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({link, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if link.done():
            return link.result()
        agent.runner.abort_all("Server is shutting down.")
        await agent.drain(timeout=agent.runner.settings.kill_timeout + 15)
        await agent.link.stop()
        return await link
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM) if signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        for task in (*tasks, stopper, link):
            task.cancel()
        for task in (*tasks, stopper, link):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await agent.runner.close()


async def _main(config: AgentConfig, environ: Mapping[str, str]) -> int:
    fast_child_watcher()
    return await serve(config, environ)


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """`podium agent ARGS`: the exit status."""
    environ = os.environ if env is None else env
    try:
        config = parse(argv, environ)
        logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")  # fmt: skip
        return asyncio.run(_main(config, environ))
    except ConfigError as exc:
        print(f"podium agent: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
