"""The `podium` command: `serve` a node, print the cluster's `status`, run an `agent`, or the client commands
(`call`, `run`, `jobs`, `job`, `tail`, `export`, `import`, `apply`: podium/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from podium.cli import COMMANDS as CLIENT_COMMANDS
from storage.connection import DEFAULT_POOL, DEFAULT_POOL_TIMEOUT_S
from storage.embedded import socket_url

from .settings import (
    DEFAULT_ANON_BODY,
    DEFAULT_BIND,
    DEFAULT_EMAIL_FROM,
    DEFAULT_FILE_MAX,
    DEFAULT_FILE_STORE_MAX,
    DEFAULT_LEASE_MS,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_JSON,
    DEFAULT_SMTP_PORT,
    DEFAULT_UPLOAD_MAX_FILE_MB,
    DEFAULT_UPLOAD_MAX_FILES,
    DEFAULT_UPLOAD_MAX_REQUEST_MB,
    METRICS_MODES,
    SMTP_TLS,
    WORKER_ENV,
    ConfigError,
    Settings,
    default_workers,
    parse_bind,
)

# option -> environment variable; the README's config table lists the same pairs.
ENV = {
    "redis": "PODIUM_REDIS_URL",
    "redis_pool": "PODIUM_REDIS_POOL",
    "redis_pool_timeout": "PODIUM_REDIS_POOL_TIMEOUT",
    "data_dir": "PODIUM_DATA_DIR",
    "bind": "PODIUM_BIND",
    "advertise": "PODIUM_ADVERTISE",
    "cluster": "PODIUM_CLUSTER",
    "secret_key": "PODIUM_SECRET_KEY",
    "lease_ms": "PODIUM_LEASE_MS",
    "log_format": "PODIUM_LOG_FORMAT",
    "log_level": "PODIUM_LOG_LEVEL",
    "access_log": "PODIUM_ACCESS_LOG",
    "event_loop": "PODIUM_EVENT_LOOP",
    "workers": "PODIUM_WORKERS",
    "max_body_bytes": "PODIUM_MAX_BODY_BYTES",
    "anon_body_bytes": "PODIUM_ANON_BODY_BYTES",
    "max_json_bytes": "PODIUM_MAX_JSON_BYTES",
    "csrf": "PODIUM_CSRF",
    "free_accounts": "PODIUM_FREE_ACCOUNTS",
    "session_days": "PODIUM_SESSION_DAYS",
    "login_ip_limit": "PODIUM_LOGIN_IP_LIMIT",
    "max_failed_logins_per_hour": "PODIUM_MAX_FAILED_LOGINS_PER_HOUR",
    "login_user_limit": "PODIUM_LOGIN_USER_LIMIT",
    "login_lock": "PODIUM_LOGIN_LOCK",
    "login_lock_max": "PODIUM_LOGIN_LOCK_MAX",
    "job_max_rows": "PODIUM_JOB_MAX_ROWS",
    "activity_max_rows": "PODIUM_ACTIVITY_MAX_ROWS",
    "snapshot_max_rows": "PODIUM_SNAPSHOT_MAX_ROWS",
    "snapshot_expire_days": "PODIUM_SNAPSHOT_EXPIRE_DAYS",
    "snapshot_max_mb": "PODIUM_SNAPSHOT_MAX_MB",
    "job_expire_days": "PODIUM_JOB_EXPIRE_DAYS",
    "activity_expire_days": "PODIUM_ACTIVITY_EXPIRE_DAYS",
    "max_sessions_per_user": "PODIUM_MAX_SESSIONS_PER_USER",
    "timeline_hourly_days": "PODIUM_TIMELINE_HOURLY_DAYS",
    "timeline_daily_days": "PODIUM_TIMELINE_DAILY_DAYS",
    "timeline_monthly_days": "PODIUM_TIMELINE_MONTHLY_DAYS",
    "timeline_yearly_days": "PODIUM_TIMELINE_YEARLY_DAYS",
    "scheduler_grace": "PODIUM_SCHEDULER_GRACE",
    "max_jobs_per_min": "PODIUM_MAX_JOBS_PER_MIN",
    "dead_job_timeout": "PODIUM_DEAD_JOB_TIMEOUT",
    "finishing_timeout": "PODIUM_FINISHING_TIMEOUT",
    "abort_timeout": "PODIUM_ABORT_TIMEOUT",
    "job_log_max_bytes": "PODIUM_JOB_LOG_MAX_BYTES",
    "agent": "PODIUM_AGENT",
    "redirect_writes": "PODIUM_REDIRECT_WRITES",
    "file_store": "PODIUM_FILE_STORE",
    "file_max_bytes": "PODIUM_FILE_MAX_BYTES",
    "file_store_max_bytes": "PODIUM_FILE_STORE_MAX_BYTES",
    "upload_max_file_mb": "PODIUM_UPLOAD_MAX_FILE_MB",
    "upload_max_request_mb": "PODIUM_UPLOAD_MAX_REQUEST_MB",
    "upload_max_files": "PODIUM_UPLOAD_MAX_FILES",
    "bucket_max_files": "PODIUM_BUCKET_MAX_FILES",
    "bucket_max_file_mb": "PODIUM_BUCKET_MAX_FILE_MB",
    "ticket_email": "PODIUM_TICKET_EMAIL",
    "ticket_debounce_s": "PODIUM_TICKET_DEBOUNCE_S",
    "ticket_overdue_time": "PODIUM_TICKET_OVERDUE_TIME",
    "s3_endpoint": "PODIUM_S3_ENDPOINT",
    "s3_bucket": "PODIUM_S3_BUCKET",
    "s3_region": "PODIUM_S3_REGION",
    "s3_prefix": "PODIUM_S3_PREFIX",
    "s3_path_style": "PODIUM_S3_PATH_STYLE",
    "smtp_host": "PODIUM_SMTP_HOST",
    "smtp_port": "PODIUM_SMTP_PORT",
    "smtp_username": "PODIUM_SMTP_USERNAME",
    "smtp_password": "PODIUM_SMTP_PASSWORD",
    "smtp_tls": "PODIUM_SMTP_TLS",
    "email_from": "PODIUM_EMAIL_FROM",
    "base_url": "PODIUM_BASE_URL",
    "metrics": "PODIUM_METRICS",
}
_TRUE = ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podium", description="Podium conductor node")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node (primary or satellite)")
    serve.add_argument("--redis", metavar="URL", help="external Redis/Valkey URL (default: embedded server)")
    serve.add_argument("--redis-pool", metavar="N", help=f"Redis connections for requests (default {DEFAULT_POOL})")
    serve.add_argument("--redis-pool-timeout", metavar="S",
                       help=f"seconds a request waits for one (default {DEFAULT_POOL_TIMEOUT_S:g})")  # fmt: skip
    serve.add_argument("--data-dir", metavar="DIR", help="node id, embedded store and spool (default ./data)")
    serve.add_argument("--bind", metavar="HOST:PORT", help=f"HTTP listen address (default {DEFAULT_BIND})")
    serve.add_argument("--advertise", metavar="URL", help="base URL other nodes and clients use for this node")
    serve.add_argument("--cluster", metavar="NAME", help="cluster name = Redis key prefix (default podium)")
    serve.add_argument("--secret-key", metavar="KEY", help="cluster secret (default: generated once, in Redis)")
    serve.add_argument("--lease-ms", metavar="MS", help=f"primary lease (default {DEFAULT_LEASE_MS})")
    serve.add_argument("--log-format", choices=["json", "console", "auto"], help="log format (default auto)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    serve.add_argument("--access-log", choices=["on", "off"], help="log every request (default on)")
    serve.add_argument("--workers", metavar="N",
                       help=f"HTTP processes on the port (default 1; one per core here: {default_workers()})")
    serve.add_argument("--event-loop", choices=["uvloop", "asyncio"], help="event loop (default uvloop)")
    serve.add_argument("--max-body-bytes", metavar="N", help=f"request body limit (default {DEFAULT_MAX_BODY})")
    serve.add_argument("--anon-body-bytes", metavar="N",
                       help=f"body limit before the caller is known (default {DEFAULT_ANON_BODY})")  # fmt: skip
    serve.add_argument("--max-json-bytes", metavar="N", help=f"JSON body limit (default {DEFAULT_MAX_JSON})")
    serve.add_argument("--csrf", choices=["on", "off"], help="CSRF check for cookie sessions on POST (default on)")
    serve.add_argument("--free-accounts", choices=["on", "off"], help="allow self sign-up (default off)")
    serve.add_argument("--session-days", metavar="N", help="session lifetime in days (default 365)")
    serve.add_argument("--login-ip-limit", metavar="N", help="failed logins per address per 10 min (default 20)")
    serve.add_argument("--max-failed-logins-per-hour", metavar="N",
                       help="failed logins of one name from one address before a temporary lock (default 5)")
    serve.add_argument("--login-user-limit", metavar="N",
                       help="failed logins of one name from all addresses per hour before a lock (default 50)")
    serve.add_argument("--login-lock", metavar="S", help="first temporary login lock, doubled per lock (default 60)")
    serve.add_argument("--login-lock-max", metavar="S", help="longest temporary login lock (default 3600)")
    serve.add_argument("--job-max-rows", metavar="N", help="job records kept (default 100000, 0 = all)")
    serve.add_argument("--activity-max-rows", metavar="N", help="activity records kept (default 100000, 0 = all)")
    serve.add_argument("--job-expire-days", metavar="N", help="delete jobs completed N days ago (default 0 = off)")
    serve.add_argument("--activity-expire-days", metavar="N", help="delete activity N days old (default 0 = off)")
    serve.add_argument("--snapshot-max-rows", metavar="N", help="server snapshots kept (default 10000, 0 = all)")
    serve.add_argument("--snapshot-expire-days", metavar="N", help="delete snapshots N days old (default 0 = off)")
    serve.add_argument("--snapshot-max-mb", metavar="N", help="MB all snapshots may take (default 512, 0 = no cap)")
    serve.add_argument("--max-sessions-per-user", metavar="N", help="sessions kept per user (default 100)")
    serve.add_argument("--timeline-hourly-days", metavar="N", help="days of 1-minute monitor data (default 7)")
    serve.add_argument("--timeline-daily-days", metavar="N", help="days of 2-minute monitor data (default 90)")
    serve.add_argument("--timeline-monthly-days", metavar="N", help="days of hourly monitor data (default 1826)")
    serve.add_argument("--timeline-yearly-days", metavar="N", help="days of 12-hour monitor data (default 3652)")
    serve.add_argument("--scheduler-grace", metavar="S", help="launch slots missed by up to S seconds (default 60)")
    serve.add_argument("--max-jobs-per-min", metavar="N", help="scheduler brake (default 100)")
    serve.add_argument("--dead-job-timeout", metavar="S", help="abort a job silent for S seconds (default 120)")
    serve.add_argument("--finishing-timeout", metavar="S", help="complete a job finishing for S s (default 120)")
    serve.add_argument("--abort-timeout", metavar="S", help="complete an unanswered abort after S s (default 30)")
    serve.add_argument("--job-log-max-bytes", metavar="N", help="stored output per job (default 134217728)")
    serve.add_argument("--no-agent", dest="agent", action="store_const", const="off",
                       help="do not run this machine's agent with the node")  # fmt: skip
    serve.add_argument("--redirect-writes", dest="redirect_writes", action="store_const", const="on",
                       help="on a satellite, answer write calls with 307 to the primary (for curl -L)")  # fmt: skip
    serve.add_argument("--file-store", metavar="redis|s3|DIR",
                       help="job files and finished logs: in Redis, an S3 bucket (--s3-*), or a directory every node "
                            "shares (default redis)")  # fmt: skip
    serve.add_argument("--file-max-bytes", metavar="N", help=f"largest stored file (default {DEFAULT_FILE_MAX})")
    serve.add_argument("--file-store-max-bytes", metavar="N",
                       help=f"total bytes the Redis file store holds (default {DEFAULT_FILE_STORE_MAX})")  # fmt: skip
    serve.add_argument("--upload-max-file-mb", metavar="MB",
                       help=f"largest user upload, at most --file-max-bytes (default {DEFAULT_UPLOAD_MAX_FILE_MB})")
    serve.add_argument("--upload-max-request-mb", metavar="MB",
                       help=f"all files of one upload request (default {DEFAULT_UPLOAD_MAX_REQUEST_MB})")
    serve.add_argument("--upload-max-files", metavar="N",
                       help=f"files per upload request (default {DEFAULT_UPLOAD_MAX_FILES})")
    serve.add_argument("--bucket-max-files", metavar="N", help="files one bucket holds (default 100)")
    serve.add_argument("--bucket-max-file-mb", metavar="MB", help="largest file in a bucket (default 1024)")
    serve.add_argument("--ticket-email", choices=["on", "off"], help="mail about ticket changes (default on)")
    serve.add_argument("--ticket-debounce-s", metavar="S",
                       help="quiet seconds after a ticket's last change before its mail goes (default 30)")
    serve.add_argument("--ticket-overdue-time", metavar="HH:MM",
                       help="local time of the daily overdue ticket mail (default 04:30)")
    serve.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible server for --file-store s3 (default AWS)")
    serve.add_argument("--s3-bucket", metavar="NAME", help="bucket of --file-store s3 (required with it)")
    serve.add_argument("--s3-region", metavar="NAME", help="region of the bucket (default: botocore's)")
    serve.add_argument("--s3-prefix", metavar="PREFIX", help="key prefix inside the bucket (default none)")
    serve.add_argument("--s3-path-style", choices=["on", "off"],
                       help="bucket in the URL path, for local S3-compatible servers (default off)")  # fmt: skip
    serve.add_argument("--smtp-host", metavar="HOST", help="SMTP server for email actions (default none: email off)")
    serve.add_argument("--smtp-port", metavar="N", help=f"SMTP port (default {DEFAULT_SMTP_PORT})")
    serve.add_argument("--smtp-username", metavar="NAME", help="SMTP login (default none)")
    serve.add_argument("--smtp-password", metavar="PASSWORD",
                       help="SMTP password; prefer PODIUM_SMTP_PASSWORD (a command line is visible to others)")
    serve.add_argument("--smtp-tls", choices=SMTP_TLS,
                       help="auto (default): tls on port 465, starttls on 587, none on other ports")
    serve.add_argument("--email-from", metavar="ADDRESS", help=f"sender of emails (default {DEFAULT_EMAIL_FROM})")
    serve.add_argument("--base-url", metavar="URL", help="base of links in emails and web hooks (default --advertise)")
    serve.add_argument("--metrics", choices=METRICS_MODES,
                       help="GET /metrics: open (default), key (an API key or session needed) or off")  # fmt: skip

    status = sub.add_parser("status", help="print the cluster's nodes, roles, primary and epoch")
    status.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded store in --data-dir)")
    status.add_argument("--data-dir", metavar="DIR", help="data dir of a node with the embedded store")
    status.add_argument("--cluster", metavar="NAME", help="cluster name (default podium)")

    agent = sub.add_parser("agent", help="run jobs for a cluster (podium agent --help)", add_help=False)
    agent.add_argument("agent_args", nargs=argparse.REMAINDER)

    client_helps = {"call": "run an API call and print its JSON reply", "run": "launch a job (--wait to follow it)",
                    "jobs": "active and recent jobs", "job": "one job", "tail": "follow a job's output",
                    "export": "download an export of the cluster's data (xyOps format)",
                    "import": "import an export file (--dry-run: report only)",
                    "apply": "make the definitions in a directory so (events as code)"}  # fmt: skip
    for name, text in client_helps.items():  # parsed by podium/cli.py (podium NAME --help)
        sub.add_parser(name, help=text, add_help=False).add_argument("client_args", nargs=argparse.REMAINDER)

    user = sub.add_parser("user", help="recover a user account directly in the store (no API key needed)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    helps = {"unlock": "lift the account lock and every temporary login lock",
             "password": "set a new password (from stdin, or prompted) and end every session"}  # fmt: skip
    for name, text in helps.items():
        cmd = user_sub.add_parser(name, help=text)
        cmd.add_argument("username")
        cmd.add_argument("--redis", metavar="URL", help="Redis URL (default: the embedded store in --data-dir)")
        cmd.add_argument("--data-dir", metavar="DIR", help="data dir of a node with the embedded store")
        cmd.add_argument("--cluster", metavar="NAME", help="cluster name (default podium)")
    return parser


def _pick(args: argparse.Namespace, env: Mapping[str, str], name: str, default: str) -> str:
    value = getattr(args, name, None)
    if value is None:
        value = env.get(ENV[name])
    return default if value is None or value == "" else str(value)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _from_env(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    """option flag -> variable, for every option whose value came from the environment."""
    return {_option(n): var for n, var in ENV.items() if getattr(args, n, None) is None and env.get(var)}


def _named(exc: ConfigError, env_named: Mapping[str, str]) -> ConfigError:
    """An error about an option given by variable names the variable (`PODIUM_LEASE_MS='abc'`)."""
    flag, sep, rest = str(exc).partition(" ")
    if sep and flag in env_named:
        return ConfigError(f"{env_named[flag]}={rest}")
    return exc


def _int(value: str, option: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: must be an integer") from None


def _float(value: str, option: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"{option} {value!r}: must be a number")
    return number


def _flag(value: str) -> bool:
    return value.lower() in (*_TRUE, "on")


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    try:
        return _settings(args, env)
    except ConfigError as exc:
        raise _named(exc, _from_env(args, env)) from None


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    host, port = parse_bind(_pick(args, env, "bind", DEFAULT_BIND))
    redis_url = _pick(args, env, "redis", "") or None
    return Settings(
        redis_url=redis_url,
        redis_pool=_int(_pick(args, env, "redis_pool", str(DEFAULT_POOL)), "--redis-pool"),
        redis_pool_timeout=_float(
            _pick(args, env, "redis_pool_timeout", str(DEFAULT_POOL_TIMEOUT_S)), "--redis-pool-timeout"
        ),
        data_dir=Path(_pick(args, env, "data_dir", "data")),
        host=host,
        port=port,
        advertise=_pick(args, env, "advertise", ""),
        cluster=_pick(args, env, "cluster", "podium"),
        secret_key=_pick(args, env, "secret_key", "") or None,
        lease_ms=_int(_pick(args, env, "lease_ms", str(DEFAULT_LEASE_MS)), "--lease-ms"),
        log_format=_pick(args, env, "log_format", "auto"),
        log_level=_pick(args, env, "log_level", "info"),
        access_log=_flag(_pick(args, env, "access_log", "on")),
        event_loop=_pick(args, env, "event_loop", "uvloop"),
        workers=_int(_pick(args, env, "workers", "1"), "--workers"),  # opt-in until launches go to the node process
        worker_index=_int(env.get(WORKER_ENV, "0"), WORKER_ENV),
        max_body_bytes=_int(_pick(args, env, "max_body_bytes", str(DEFAULT_MAX_BODY)), "--max-body-bytes"),
        anon_body_bytes=_int(_pick(args, env, "anon_body_bytes", str(DEFAULT_ANON_BODY)), "--anon-body-bytes"),
        max_json_bytes=_int(_pick(args, env, "max_json_bytes", str(DEFAULT_MAX_JSON)), "--max-json-bytes"),
        use_csrf=_flag(_pick(args, env, "csrf", "on")),
        free_accounts=_flag(_pick(args, env, "free_accounts", "off")),
        session_days=_int(_pick(args, env, "session_days", "365"), "--session-days"),
        login_ip_limit=_int(_pick(args, env, "login_ip_limit", "20"), "--login-ip-limit"),
        max_failed_logins_per_hour=_int(
            _pick(args, env, "max_failed_logins_per_hour", "5"), "--max-failed-logins-per-hour"
        ),
        login_user_limit=_int(_pick(args, env, "login_user_limit", "50"), "--login-user-limit"),
        login_lock_s=_int(_pick(args, env, "login_lock", "60"), "--login-lock"),
        login_lock_max_s=_int(_pick(args, env, "login_lock_max", "3600"), "--login-lock-max"),
        job_max_rows=_int(_pick(args, env, "job_max_rows", "100000"), "--job-max-rows"),
        activity_max_rows=_int(_pick(args, env, "activity_max_rows", "100000"), "--activity-max-rows"),
        job_expire_days=_int(_pick(args, env, "job_expire_days", "0"), "--job-expire-days"),
        activity_expire_days=_int(_pick(args, env, "activity_expire_days", "0"), "--activity-expire-days"),
        snapshot_max_rows=_int(_pick(args, env, "snapshot_max_rows", "10000"), "--snapshot-max-rows"),
        snapshot_expire_days=_int(_pick(args, env, "snapshot_expire_days", "0"), "--snapshot-expire-days"),
        snapshot_max_mb=_int(_pick(args, env, "snapshot_max_mb", "512"), "--snapshot-max-mb"),
        max_sessions_per_user=_int(_pick(args, env, "max_sessions_per_user", "100"), "--max-sessions-per-user"),
        timeline_hourly_days=_int(_pick(args, env, "timeline_hourly_days", "7"), "--timeline-hourly-days"),
        timeline_daily_days=_int(_pick(args, env, "timeline_daily_days", "90"), "--timeline-daily-days"),
        timeline_monthly_days=_int(_pick(args, env, "timeline_monthly_days", "1826"), "--timeline-monthly-days"),
        timeline_yearly_days=_int(_pick(args, env, "timeline_yearly_days", "3652"), "--timeline-yearly-days"),
        scheduler_grace_s=_int(_pick(args, env, "scheduler_grace", "60"), "--scheduler-grace"),
        max_jobs_per_min=_int(_pick(args, env, "max_jobs_per_min", "100"), "--max-jobs-per-min"),
        dead_job_timeout_s=_int(_pick(args, env, "dead_job_timeout", "120"), "--dead-job-timeout"),
        finishing_timeout_s=_int(_pick(args, env, "finishing_timeout", "120"), "--finishing-timeout"),
        abort_timeout_s=_int(_pick(args, env, "abort_timeout", "30"), "--abort-timeout"),
        job_log_max_bytes=_int(_pick(args, env, "job_log_max_bytes", str(128 * 1024 * 1024)), "--job-log-max-bytes"),
        agent=_flag(_pick(args, env, "agent", "on")),
        redirect_writes=_flag(_pick(args, env, "redirect_writes", "off")),
        file_store=_pick(args, env, "file_store", "redis"),
        file_max_bytes=_int(_pick(args, env, "file_max_bytes", str(DEFAULT_FILE_MAX)), "--file-max-bytes"),
        file_store_max_bytes=_int(
            _pick(args, env, "file_store_max_bytes", str(DEFAULT_FILE_STORE_MAX)), "--file-store-max-bytes"
        ),
        upload_max_file_mb=_int(_pick(args, env, "upload_max_file_mb", str(DEFAULT_UPLOAD_MAX_FILE_MB)),
                                "--upload-max-file-mb"),
        upload_max_request_mb=_int(_pick(args, env, "upload_max_request_mb", str(DEFAULT_UPLOAD_MAX_REQUEST_MB)),
                                   "--upload-max-request-mb"),
        upload_max_files=_int(_pick(args, env, "upload_max_files", str(DEFAULT_UPLOAD_MAX_FILES)),
                              "--upload-max-files"),
        bucket_max_files=_int(_pick(args, env, "bucket_max_files", "100"), "--bucket-max-files"),
        bucket_max_file_mb=_int(_pick(args, env, "bucket_max_file_mb", "1024"), "--bucket-max-file-mb"),
        ticket_email=_flag(_pick(args, env, "ticket_email", "on")),
        ticket_debounce_s=_int(_pick(args, env, "ticket_debounce_s", "30"), "--ticket-debounce-s"),
        ticket_overdue_time=_pick(args, env, "ticket_overdue_time", "04:30"),
        s3_endpoint=_pick(args, env, "s3_endpoint", ""),
        s3_bucket=_pick(args, env, "s3_bucket", ""),
        s3_region=_pick(args, env, "s3_region", ""),
        s3_prefix=_pick(args, env, "s3_prefix", ""),
        s3_path_style=_flag(_pick(args, env, "s3_path_style", "off")),
        smtp_host=_pick(args, env, "smtp_host", ""),
        smtp_port=_int(_pick(args, env, "smtp_port", str(DEFAULT_SMTP_PORT)), "--smtp-port"),
        smtp_username=_pick(args, env, "smtp_username", ""),
        smtp_password=_pick(args, env, "smtp_password", ""),
        smtp_tls=_pick(args, env, "smtp_tls", "auto"),
        email_from=_pick(args, env, "email_from", DEFAULT_EMAIL_FROM),
        base_url=_pick(args, env, "base_url", ""),
        metrics=_pick(args, env, "metrics", "open"),
        test_hooks=env.get("PODIUM_TEST_HOOKS", "").lower() in _TRUE,
    ).validate()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    environ = os.environ if env is None else env
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["agent"]:  # the agent parses its own options
        from cluster.agent.main import run

        return run(words[1:], environ)
    if words[:1] and words[0] in CLIENT_COMMANDS:  # the client commands live with the client
        from podium.cli import main as client_main

        return client_main(words, environ)
    args = build_parser().parse_args(words)
    try:
        if args.command == "serve":
            return _serve(settings_from(args, environ), words)
        if args.command == "user":
            return _user(args, environ)
        return _status(args, environ)
    except ConfigError as exc:
        print(f"podium: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _serve(settings: Settings, words: Sequence[str]) -> int:
    from . import logs
    from .server import serve, serve_worker

    logs.configure(settings.log_format, settings.log_level)
    # A worker is the same command started by the node process (api/workers.py).
    run = serve_worker(settings) if settings.worker_index else serve(settings, words)
    if settings.event_loop == "uvloop":  # its transports cost less per request than asyncio's
        import uvloop

        uvloop.run(run)
    else:
        asyncio.run(run)
    return 0


def _status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .status import cluster_status

    data_dir = Path(_pick(args, env, "data_dir", "data"))
    url = _pick(args, env, "redis", "") or socket_url(data_dir)
    cluster = _pick(args, env, "cluster", "podium")
    print(asyncio.run(cluster_status(url, cluster)))
    return 0


def _user(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .useradmin import read_new_password, set_password, unlock

    data_dir = Path(_pick(args, env, "data_dir", "data"))
    url = _pick(args, env, "redis", "") or socket_url(data_dir)
    cluster = _pick(args, env, "cluster", "podium")
    if args.user_command == "unlock":
        print(asyncio.run(unlock(url, cluster, args.username)))
    else:
        password = read_new_password()
        print(asyncio.run(set_password(url, cluster, args.username, password)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
