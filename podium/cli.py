"""The client commands of `podium`: call, run, jobs, job, tail, export, import, apply. `api/cli.py` hands these words
over here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from . import config
from .errors import PodiumError
from .output import ProgressBar, code_text, paint, seconds, table, when
from .sync import Client
from .transfercli import TRANSFER_COMMANDS, transfer_parsers

COMMANDS = ("call", "run", "jobs", "job", "tail", "export", "import", "apply")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", action="append", metavar="URL",
                        help="node base URL; repeat it or give a comma list (default $PODIUM_URL, the config file, "
                             f"{config.DEFAULT_URL})")  # fmt: skip
    common.add_argument("--api-key", metavar="KEY", help="API key (default $PODIUM_API_KEY or the config file)")
    common.add_argument("--config", metavar="PATH", help="client config file (default ~/.config/podium/client.toml)")
    parser = argparse.ArgumentParser(prog="podium", description="Podium client commands")
    sub = parser.add_subparsers(dest="command", required=True)

    call = sub.add_parser("call", parents=[common], help="run any API call and print its JSON reply")
    call.add_argument("name", help="call name, e.g. get_events (or user/login)")
    call.add_argument("params", nargs="*", metavar="key=value",
                      help="parameters: key=text, or key:=JSON for numbers, booleans, lists and objects")  # fmt: skip
    call.add_argument("--json", dest="json_file", metavar="FILE", help="parameters as a JSON object ('-' = stdin)")

    run = sub.add_parser("run", parents=[common], help="launch a job of an event")
    run.add_argument("event", help="event id")
    run.add_argument("--param", action="append", default=[], metavar="k=v", help="a job parameter (repeatable)")
    run.add_argument("--wait", action="store_true", help="follow the job; exit with its code")
    run.add_argument("--json", action="store_true", help="JSON output for scripts")

    jobs = sub.add_parser("jobs", parents=[common], help="active and recent jobs")
    jobs.add_argument("--limit", type=int, default=10, help="recent completed jobs to list (default 10)")
    jobs.add_argument("--json", action="store_true", help="JSON output for scripts")

    job = sub.add_parser("job", parents=[common], help="one job")
    job.add_argument("id")
    job.add_argument("--json", action="store_true", help="JSON output for scripts")

    tail = sub.add_parser("tail", parents=[common], help="follow a job's output until it finishes")
    tail.add_argument("id")
    transfer_parsers(sub, common)
    return parser


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    environ = os.environ if env is None else env
    args = build_parser().parse_args(list(argv))
    try:
        settings = config.load(args.url, args.api_key, args.config, environ)
        params = _call_params(args) if args.command == "call" else {}
    except config.ConfigError as exc:
        print(f"podium: error: {exc}", file=sys.stderr)
        return 2
    with Client(settings.urls, **settings.options()) as client:
        try:
            if args.command in TRANSFER_COMMANDS:
                return TRANSFER_COMMANDS[args.command](client, args)
            if args.command == "call":
                return _call(client, args.name, params)
            if args.command == "run":
                return _run(client, args)
            if args.command == "jobs":
                return _jobs(client, args)
            if args.command == "job":
                return _job(client, args)
            return _follow(client, args.id, ProgressBar())
        except PodiumError as exc:
            if exc.reply and args.command == "call":
                print(json.dumps(exc.reply, indent=2))
            print(f"podium: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        except (aiohttp.ClientError, ValueError, KeyError, OSError) as exc:  # a node's odd reply, a closed pipe
            print(f"podium: error: {exc!r}", file=sys.stderr)
            return 1


def _pairs(words: Sequence[str], option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise config.ConfigError(f"{option} {word!r}: must be key=value")
        if key.endswith(":"):
            try:
                out[key[:-1]] = json.loads(value)
            except ValueError:
                raise config.ConfigError(f"{option} {word!r}: the value after ':=' must be JSON") from None
        else:
            out[key] = value
    return out


def _call_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.json_file:
        try:
            if args.json_file == "-":
                text = sys.stdin.read()
            else:
                with open(args.json_file, encoding="utf-8") as f:
                    text = f.read()
            params = json.loads(text)
        except OSError as exc:
            raise config.ConfigError(f"--json {args.json_file!r}: {exc.strerror}") from None
        except ValueError as exc:
            raise config.ConfigError(f"--json {args.json_file!r}: not JSON ({exc})") from None
        if not isinstance(params, dict):
            raise config.ConfigError(f"--json {args.json_file!r}: must hold a JSON object")
    return {**params, **_pairs(args.params, "parameter")}


def _call(client: Client, name: str, params: dict[str, Any]) -> int:
    ns, _, call = name.rpartition("/")
    print(json.dumps(client.call(call, params, ns=ns or "app"), indent=2))
    return 0


def exit_code(code: Any) -> int:
    """A job's code as a process exit code: 0 only for success, the number where it fits, else 1."""
    if code in (0, None, ""):
        return 0 if code == 0 else 1
    return code if isinstance(code, int) and 0 < code < 256 else 1


def _run(client: Client, args: argparse.Namespace) -> int:
    params = _pairs(args.param, "--param")
    reply = client.call("run_event", {"id": args.event, **({"params": params} if params else {})})
    job_id = str(reply["id"])
    if args.json and not args.wait:
        print(json.dumps({"id": job_id}))
        return 0
    if args.json:
        for _ in client.stream_job(job_id):
            pass
        job = client.call("get_job", {"id": job_id})["job"]
        print(json.dumps(job, indent=2))
        return exit_code(job.get("code"))
    print(f"job {job_id}", file=sys.stderr)
    return _follow(client, job_id, ProgressBar()) if args.wait else 0


def _follow(client: Client, job_id: str, bar: ProgressBar) -> int:
    """The job's output on stdout as it comes, its progress on stderr; the exit code from its final code."""
    final: dict[str, Any] = {}
    ended_line = True
    for item in client.stream_job(job_id):
        if item.event == "log":
            text = str(item.data.get("text", ""))
            bar.clear()
            sys.stdout.write(text)
            sys.stdout.flush()
            ended_line = text.endswith("\n") if text else ended_line
            bar.redraw()
        elif item.event == "update":
            if "completed" in item.data or item.data.get("error"):
                final = item.data
            else:
                bar.show(float(item.data.get("progress") or 0), str(item.data.get("state") or ""))
    bar.done()
    if not ended_line:
        sys.stdout.write("\n")
    if not final:
        final = client.call("get_job", {"id": job_id})["job"]
    code = final.get("code")
    status = paint("succeeded", "green", sys.stderr) if code == 0 else paint(f"failed ({code})", "red", sys.stderr)
    detail = f": {final['description']}" if code != 0 and final.get("description") else ""
    print(f"job {job_id} {status} in {seconds(final.get('elapsed'))}{detail}", file=sys.stderr)
    return exit_code(code)


def _jobs(client: Client, args: argparse.Namespace) -> int:
    active = client.call("get_active_jobs", {})["rows"]
    recent = client.call("search_jobs", {"query": "*", "limit": max(1, args.limit)})["rows"]
    if args.json:
        print(json.dumps({"active": active, "recent": recent}, indent=2))
        return 0
    rows = [[j.get("id", ""), str(j.get("event_title") or j.get("event", "")), str(j.get("state", "")),
             f"{float(j.get('progress') or 0) * 100:.0f}%", when(j.get("started")), "", "",
             str(j.get("server", ""))] for j in active]  # fmt: skip
    rows += [[j.get("id", ""), str(j.get("event_title") or j.get("event", "")), "complete", "",
              when(j.get("started")), seconds(j.get("elapsed")), code_text(j.get("code")),
              str(j.get("server", ""))] for j in recent]  # fmt: skip
    if not rows:
        print("no jobs")
        return 0
    table(["ID", "EVENT", "STATE", "PROGRESS", "STARTED", "ELAPSED", "CODE", "SERVER"], rows)
    return 0


_JOB_FIELDS = ("id", "event", "event_title", "state", "progress", "code", "description", "server", "source",
               "username", "started", "completed", "elapsed")  # fmt: skip


def _job(client: Client, args: argparse.Namespace) -> int:
    job = client.call("get_job", {"id": args.id})["job"]
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    rows = []
    for key in _JOB_FIELDS:
        value = job.get(key)
        if value in (None, ""):
            continue
        shown = (when(value) if key in ("started", "completed") else seconds(value) if key == "elapsed"
                 else code_text(value) if key == "code" else f"{float(value) * 100:.0f}%" if key == "progress"
                 else str(value))  # fmt: skip
        rows.append([key, shown])
    table(["FIELD", "VALUE"], rows)
    return 0
