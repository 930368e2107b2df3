"""Node configuration: one frozen dataclass, read from CLI options and PODIUM_* variables in the CLI only."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from storage.connection import DEFAULT_POOL, DEFAULT_POOL_TIMEOUT_S, check_url
from storage.errors import BadRedisURL
from storage.keyspace import valid_cluster_name

if TYPE_CHECKING:
    from storage.files.s3 import S3Config

DEFAULT_PORT = 5522
DEFAULT_BIND = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_LEASE_MS = 3000
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_ANON_BODY = 64 * 1024
DEFAULT_MAX_JSON = 4 * 1024 * 1024
DEFAULT_FILE_MAX = 256 * 1024 * 1024
DEFAULT_FILE_STORE_MAX = 2 * 1024 * 1024 * 1024
DEFAULT_UPLOAD_MAX_FILE_MB = 1024
DEFAULT_UPLOAD_MAX_REQUEST_MB = 1024
DEFAULT_UPLOAD_MAX_FILES = 100
DEFAULT_SMTP_PORT = 25
DEFAULT_EMAIL_FROM = "podium@localhost"
SMTP_TLS = ("auto", "none", "starttls", "tls")
METRICS_MODES = ("open", "key", "off")
DEFAULT_TICKET_DEBOUNCE_S = 30
DEFAULT_TICKET_OVERDUE_TIME = "04:30"
_HH_MM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_EMAIL = re.compile(r"[^@\s,;<>()\[\]\\\"']+@[A-Za-z0-9.\-]+")


class ConfigError(Exception):
    """A configuration problem, reported as one line and a non-zero exit."""


def parse_bind(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = value, str(DEFAULT_PORT)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--bind {value!r}: port must be a number") from None
    if not 0 <= port < 65536:
        raise ConfigError(f"--bind {value!r}: port out of range")
    return host, port


EVENT_LOOPS = ("uvloop", "asyncio")
MAX_WORKERS = 64
WORKER_ENV = "PODIUM_WORKER_INDEX"  # set by the node process in the environment of each HTTP worker it starts


def default_workers() -> int:
    """One HTTP process per core, at most 8 by default (beyond that the store, not Python, limits a node)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 8))  # the cores this process may use (a container's cpuset), not the machine's


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str | None = None  # None: the embedded server in data_dir
    redis_pool: int = DEFAULT_POOL  # connections of the request client (the lease has its own)
    redis_pool_timeout: float = DEFAULT_POOL_TIMEOUT_S  # seconds a request waits for one, then `db`
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    advertise: str = ""
    cluster: str = "podium"
    secret_key: str | None = field(default=None, repr=False)
    lease_ms: int = DEFAULT_LEASE_MS
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    access_log: bool = True
    event_loop: str = "uvloop"  # uvloop | asyncio: the loop `podium serve` runs on
    workers: int = 1  # HTTP processes of the node on its port (api/workers.py); the CLI's default: the cores
    worker_index: int = 0  # 0: the node process; 1..workers-1: an HTTP worker it started
    max_body_bytes: int = DEFAULT_MAX_BODY
    anon_body_bytes: int = DEFAULT_ANON_BODY  # body limit until the caller is known (credentials in headers)
    max_json_bytes: int = DEFAULT_MAX_JSON  # a JSON body (or form field `json`): parsing is CPU on the event loop
    use_csrf: bool = True  # cookie sessions must echo their CSRF token on POST
    free_accounts: bool = False  # self sign-up through /api/user/create
    session_days: int = 365
    login_ip_limit: int = 20  # failed logins per client address per 10 minutes; 0 = no limit
    # Failed logins lock a name temporarily (xyOps: User.max_failed_logins_per_hour), never the account.
    max_failed_logins_per_hour: int = 5  # per name and client address; 0 = no limit
    login_user_limit: int = 50  # per name from all addresses per hour; 0 = no limit
    login_lock_s: int = 60  # first lock; each further lock doubles it ...
    login_lock_max_s: int = 3600  # ... up to this
    # Retention, applied by the primary's maintenance (xyOps: db_maint.jobs/activity.max_rows).
    job_max_rows: int = 100_000  # 0 = no cap
    activity_max_rows: int = 100_000
    job_expire_days: int = 0  # also delete job records completed longer ago; 0 = keep by count only
    activity_expire_days: int = 0
    snapshot_max_rows: int = 10_000  # snapshots live in Redis, tens of KB each (xyOps: 100,000)
    snapshot_expire_days: int = 0
    snapshot_max_mb: int = 512  # packed bytes of every snapshot together (Redis memory); 0 = no budget
    max_sessions_per_user: int = 100  # a login beyond it ends the user's oldest session; 0 = no cap
    # Monitor timelines kept per system (storage/timeseries.py; xyOps keeps 10 years of each), trimmed by maintenance.
    timeline_hourly_days: int = 7
    timeline_daily_days: int = 90
    timeline_monthly_days: int = 1826
    timeline_yearly_days: int = 3652
    scheduler_grace_s: int = 60  # missed scheduled slots younger than this are launched after a failover
    scheduler_stagger_ms: int = 50
    max_jobs_per_min: int = 100
    # Jobs (cluster/dispatch): how long a silent job, a finishing job and an unanswered abort may last.
    dead_job_timeout_s: int = 120
    finishing_timeout_s: int = 120
    abort_timeout_s: int = 30
    job_log_max_bytes: int = 128 * 1024 * 1024  # one job's stored output; a job's `log` limit may lower it
    agent: bool = True  # run this machine's agent as a child process of the node
    # A satellite answers a write with 307 to the same path on the primary (xyOps' redirect_master_requests),
    # for clients that cannot follow the `master` error reply.
    redirect_writes: bool = False
    # The file store (storage/files): "redis", "s3" (a bucket), or the directory of a filesystem every node shares.
    file_store: str = "redis"
    file_max_bytes: int = DEFAULT_FILE_MAX  # one file (an upload, a finished log)
    file_store_max_bytes: int = DEFAULT_FILE_STORE_MAX  # everything in the Redis backend together
    # Buckets (storage/buckets.py; xyOps client.bucket_upload_settings): files per bucket, megabytes per file (the
    # file store's --file-max-bytes applies as well).
    bucket_max_files: int = 100
    bucket_max_file_mb: int = 1024
    # User uploads (api/uploads.py): per file (never above file_max_bytes), all files of a request, files per request.
    upload_max_file_mb: int = DEFAULT_UPLOAD_MAX_FILE_MB
    upload_max_request_mb: int = DEFAULT_UPLOAD_MAX_REQUEST_MB
    upload_max_files: int = DEFAULT_UPLOAD_MAX_FILES
    # --file-store s3 (storage/files/s3.py); credentials come from the AWS_* variables or botocore's chain only.
    s3_endpoint: str = ""  # an S3-compatible server's URL; '' = AWS
    s3_bucket: str = ""
    s3_region: str = ""
    s3_prefix: str = ""  # key prefix inside the bucket
    s3_path_style: bool = False  # bucket in the URL path, for local servers without wildcard DNS
    # Email actions (cluster/actions/email.py); no --smtp-host = email is off and email actions record why.
    smtp_host: str = ""
    smtp_port: int = DEFAULT_SMTP_PORT
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_tls: str = "auto"  # auto: tls on port 465, starttls on 587, none on any other port
    email_from: str = DEFAULT_EMAIL_FROM
    base_url: str = ""  # links in emails and web hooks; default: the advertise URL
    # Ticket mail (cluster/tickets/mail.py; xyOps `tickets.email_enabled`, `email_debounce_sec`, `overdue_schedule`).
    ticket_email: bool = True
    ticket_debounce_s: int = DEFAULT_TICKET_DEBOUNCE_S  # quiet seconds after a ticket's last change before its mail
    ticket_overdue_time: str = DEFAULT_TICKET_OVERDUE_TIME  # local HH:MM of the daily overdue notices
    metrics: str = "open"  # GET /metrics: open (no credentials), key (an API key or session) or off
    test_hooks: bool = False

    @property
    def advertise_url(self) -> str:
        if self.advertise:
            return self.advertise.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def public_url(self) -> str:
        """The base of the links Podium sends out (emails, web hooks)."""
        return self.base_url.rstrip("/") or self.advertise_url

    @property
    def ticket_overdue_at(self) -> tuple[int, int]:
        """(hour, minute), local time, of the daily overdue ticket notices."""
        hour, _, minute = self.ticket_overdue_time.partition(":")
        return int(hour), int(minute)

    @property
    def smtp_tls_mode(self) -> str:
        """none, starttls or tls: `--smtp-tls`, or chosen by port when it is auto."""
        if self.smtp_tls != "auto":
            return self.smtp_tls
        return {465: "tls", 587: "starttls"}.get(self.smtp_port, "none")

    def _ranges(self) -> list[tuple[str, int, int, int | None]]:
        """(option, value, lowest, highest or None) of every numeric option."""
        return [
            ("--lease-ms", self.lease_ms, 500, 600_000),
            ("--max-body-bytes", self.max_body_bytes, 1024, None),
            ("--anon-body-bytes", self.anon_body_bytes, 1024, None),
            ("--max-json-bytes", self.max_json_bytes, 1024, None),
            ("--session-days", self.session_days, 1, 3650),
            ("--scheduler-grace", self.scheduler_grace_s, 0, 86400),
            ("--max-jobs-per-min", self.max_jobs_per_min, 1, None),
            ("--login-ip-limit", self.login_ip_limit, 0, None),
            ("--dead-job-timeout", self.dead_job_timeout_s, 1, 86400 * 7),
            ("--finishing-timeout", self.finishing_timeout_s, 1, 86400),
            ("--abort-timeout", self.abort_timeout_s, 1, 86400),
            ("--job-log-max-bytes", self.job_log_max_bytes, 1024, 1 << 40),
            ("--file-max-bytes", self.file_max_bytes, 1024, None),
            ("--file-store-max-bytes", self.file_store_max_bytes, 1024, None),
            ("--bucket-max-files", self.bucket_max_files, 1, 10_000),
            ("--bucket-max-file-mb", self.bucket_max_file_mb, 1, 1_048_576),
            ("--upload-max-file-mb", self.upload_max_file_mb, 1, 1 << 20),
            ("--upload-max-request-mb", self.upload_max_request_mb, 1, 1 << 20),
            ("--upload-max-files", self.upload_max_files, 1, 10_000),
            ("--smtp-port", self.smtp_port, 1, 65535),
            ("--ticket-debounce-s", self.ticket_debounce_s, 0, 86400),
            # Bounded: a server back after a gap gets stub rows (about 6 bytes each) up to its retention.
            ("--timeline-hourly-days", self.timeline_hourly_days, 1, 90),
            ("--timeline-daily-days", self.timeline_daily_days, 1, 366),
            ("--timeline-monthly-days", self.timeline_monthly_days, 1, 3660),
            ("--timeline-yearly-days", self.timeline_yearly_days, 1, 36600),
        ]

    def validate(self) -> Settings:
        self._validate_redis()
        if not valid_cluster_name(self.cluster):
            raise ConfigError(f"--cluster {self.cluster!r}: use letters, digits, '_', '.', '-' (max 64)")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError(f"--log-format {self.log_format!r}: use json or console")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"--workers {self.workers}: must be between 1 and {MAX_WORKERS}")
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(f"--event-loop {self.event_loop[:20]!r}: use {' or '.join(EVENT_LOOPS)}")
        if self.metrics not in METRICS_MODES:
            raise ConfigError(f"--metrics {self.metrics[:20]!r}: use {', '.join(METRICS_MODES)}")
        for option, value, low, high in self._ranges():
            if value < low or (high is not None and value > high):
                bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise ConfigError(f"{option} {value}: must be {bounds}")
        if self.advertise:
            parts = urlsplit(self.advertise)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"--advertise {self.advertise!r}: must be an http(s):// URL")
        self._validate_logins_and_retention()
        self._validate_email()
        self._validate_file_store()
        return self

    def _validate_file_store(self) -> None:
        if not self.file_store.strip():
            raise ConfigError("--file-store '': use redis, s3 or a directory")
        if self.file_store != "s3":
            return
        if not self.s3_bucket:
            raise ConfigError("--s3-bucket: required with --file-store s3")
        s3 = self.s3_config()
        problems = s3.problems() if s3 is not None else []
        if problems:
            raise ConfigError(problems[0])

    def s3_config(self) -> S3Config | None:
        """Where `--file-store s3` keeps files (None with another backend); imported here only when used, as
        botocore is slow to load."""
        if self.file_store != "s3":
            return None
        from storage.files.s3 import S3Config

        return S3Config(bucket=self.s3_bucket, endpoint=self.s3_endpoint, region=self.s3_region,
                        prefix=self.s3_prefix, path_style=self.s3_path_style)  # fmt: skip

    def _validate_email(self) -> None:
        if self.smtp_host and (len(self.smtp_host) > 253 or not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", self.smtp_host)):
            raise ConfigError(f"--smtp-host {self.smtp_host[:80]!r}: must be a host name or address")
        if self.smtp_tls not in SMTP_TLS:
            raise ConfigError(f"--smtp-tls {self.smtp_tls!r}: use {', '.join(SMTP_TLS)}")
        if len(self.email_from) > 254 or not _EMAIL.fullmatch(self.email_from):
            raise ConfigError(f"--email-from {self.email_from[:80]!r}: must be one address such as podium@example.com")
        if not _HH_MM.fullmatch(self.ticket_overdue_time):
            raise ConfigError(f"--ticket-overdue-time {self.ticket_overdue_time[:20]!r}: use HH:MM, 00:00-23:59")
        if self.base_url:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"--base-url {self.base_url!r}: must be an http(s):// URL")

    def _validate_redis(self) -> None:
        if self.redis_url is not None:
            try:
                check_url(self.redis_url)
            except BadRedisURL as exc:
                raise ConfigError(str(exc)) from None
        if not 1 <= self.redis_pool <= 10_000:
            raise ConfigError(f"--redis-pool {self.redis_pool}: must be between 1 and 10000")
        if not 0.1 <= self.redis_pool_timeout <= 600:
            raise ConfigError(f"--redis-pool-timeout {self.redis_pool_timeout:g}: must be between 0.1 and 600 s")

    def _validate_logins_and_retention(self) -> None:
        counts = {
            "--max-failed-logins-per-hour": self.max_failed_logins_per_hour,
            "--login-user-limit": self.login_user_limit,
            "--job-max-rows": self.job_max_rows,
            "--activity-max-rows": self.activity_max_rows,
            "--max-sessions-per-user": self.max_sessions_per_user,
        }
        for option, value in counts.items():
            if value < 0:
                raise ConfigError(f"{option} {value}: must be 0 or more")
        if not 1 <= self.login_lock_s <= 86400:
            raise ConfigError(f"--login-lock {self.login_lock_s}: must be between 1 and 86400 seconds")
        if not self.login_lock_s <= self.login_lock_max_s <= 7 * 86400:
            raise ConfigError(
                f"--login-lock-max {self.login_lock_max_s}: must be between --login-lock ({self.login_lock_s}) "
                "and 604800 seconds"
            )
        if not 0 <= self.snapshot_max_mb <= 1_048_576:
            raise ConfigError(f"--snapshot-max-mb {self.snapshot_max_mb}: must be between 0 and 1048576")
        for option, days in (("--job-expire-days", self.job_expire_days),
                             ("--activity-expire-days", self.activity_expire_days),
                             ("--snapshot-expire-days", self.snapshot_expire_days)):  # fmt: skip
            if not 0 <= days <= 36500:
                raise ConfigError(f"{option} {days}: must be between 0 and 36500")
