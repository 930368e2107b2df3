"""Node configuration: one frozen dataclass, read from CLI options and PODIUM_* variables in the CLI only."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from storage.connection import DEFAULT_POOL, DEFAULT_POOL_TIMEOUT_S, check_url
from storage.errors import BadRedisURL
from storage.keyspace import valid_cluster_name

DEFAULT_PORT = 5522
DEFAULT_BIND = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_LEASE_MS = 3000
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_ANON_BODY = 64 * 1024
DEFAULT_MAX_JSON = 4 * 1024 * 1024


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
    max_body_bytes: int = DEFAULT_MAX_BODY
    anon_body_bytes: int = DEFAULT_ANON_BODY  # body limit until the caller is known (credentials in headers)
    max_json_bytes: int = DEFAULT_MAX_JSON  # a JSON body (or form field `json`): parsing is CPU on the event loop
    use_csrf: bool = True  # cookie sessions must echo their CSRF token on POST
    free_accounts: bool = False  # self sign-up through /api/user/create
    session_days: int = 365
    login_ip_limit: int = 20  # failed logins per client address per 10 minutes; 0 = no limit
    scheduler_grace_s: int = 60  # missed scheduled slots younger than this are launched after a failover
    scheduler_stagger_ms: int = 50
    max_jobs_per_min: int = 100
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
        ]

    def validate(self) -> Settings:
        self._validate_redis()
        if not valid_cluster_name(self.cluster):
            raise ConfigError(f"--cluster {self.cluster!r}: use letters, digits, '_', '.', '-' (max 64)")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError(f"--log-format {self.log_format!r}: use json or console")
        for option, value, low, high in self._ranges():
            if value < low or (high is not None and value > high):
                bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise ConfigError(f"{option} {value}: must be {bounds}")
        if self.advertise:
            parts = urlsplit(self.advertise)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"--advertise {self.advertise!r}: must be an http(s):// URL")
        return self

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
