"""`podium serve`: bring up the store, the node runtime and the HTTP site, and take them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import logging
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from cluster import __version__
from cluster.actions.email import SmtpConfig
from cluster.actions.runner import ActionRunner, RunnerConfig, actions_service
from cluster.dispatch.machine import DispatchConfig, Dispatcher, dispatch_service
from cluster.internaljobs import InternalJobs, internal_jobs_service
from cluster.maintenance import Maintenance, MaintenanceConfig, maintenance_service
from cluster.monitoring.alertservice import AlertConfig, AlertService, alert_service
from cluster.monitoring.snapshots import ALERT_UNIVERSAL_ACTIONS, group_watch_service
from cluster.node import NodeRuntime, load_node_id
from cluster.scheduler import SchedulerConfig, scheduler_service
from cluster.tickets.changes import collapse
from cluster.tickets.mail import MAX_OVERDUE, TicketMailConfig, TicketMailer, ticket_mail_service
from storage.connection import Database, connect, redacted, wait_reachable
from storage.embedded import EmbeddedServer
from storage.errors import PageTooLarge, StorageError
from storage.files import FileStore, check_file_store, close_file_store, open_file_store
from storage.keyspace import Keyspace
from storage.secretkey import SecretKeyMismatch, ensure_secret_key
from storage.stores import Stores

from .app import RUNNER_OPTIONS, create_app
from .bootstrap import first_start
from .childagent import ChildAgent, local_url
from .front import ApiRunner
from .logs import AccessLogger, flush_access_log
from .settings import WORKER_ENV, ConfigError, Settings
from .typedefs import FORWARD
from .workers import Forwarder, WorkerPool, die_with_parent, follow, publish_counts, socket_path

log = structlog.get_logger("podium.server")


def check_port_free(host: str, port: int) -> None:
    """Fail early, before anything is started, if the HTTP port is taken."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"--bind {host}:{port}: address already in use") from None
            raise ConfigError(f"--bind {host}:{port}: {exc.strerror}") from None


def scheduler_config(settings: Settings) -> SchedulerConfig:
    return SchedulerConfig(
        grace_s=settings.scheduler_grace_s,
        stagger_ms=settings.scheduler_stagger_ms,
        max_jobs_per_min=settings.max_jobs_per_min,
    )


def dispatch_config(settings: Settings) -> DispatchConfig:
    return DispatchConfig(
        dead_job_timeout_s=settings.dead_job_timeout_s,
        finishing_timeout_s=settings.finishing_timeout_s,
        abort_timeout_s=settings.abort_timeout_s,
    )


def smtp_config(settings: Settings) -> SmtpConfig:
    """How email actions send: an empty host means email is off (each email action records why)."""
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        tls=settings.smtp_tls_mode,
        from_address=settings.email_from,
        base_url=settings.public_url,
    )


def runner_config(settings: Settings, node: NodeRuntime) -> RunnerConfig:
    return RunnerConfig(base_url=settings.public_url, smtp=smtp_config(settings),
                        plugin_dir=settings.data_dir / "plugins", local_url=local_url(settings, settings.port))


def job_services(node: NodeRuntime, settings: Settings) -> list[Any]:
    """The job state machine, its action runner, the alert evaluator (with xyOps' default universal alert action:
    a snapshot when an alert fires), the group watches and the internal jobs, as primary services of `node` (which
    gets the dispatcher, the runner, the internal jobs and the maintenance they run on demand)."""
    dispatcher = node.dispatcher = Dispatcher(node, dispatch_config(settings))
    runner = node.actions = ActionRunner(node, dispatcher, runner_config(settings, node))
    alerting = node.alerting = AlertService(node, dispatcher, AlertConfig(universal_actions=ALERT_UNIVERSAL_ACTIONS))
    internal = node.internal = InternalJobs(node)
    node.maintenance = Maintenance(node, maintenance_config(settings))
    services = [dispatch_service(dispatcher), actions_service(runner), alert_service(alerting), group_watch_service(),
                internal_jobs_service(internal)]
    if settings.ticket_email:
        services.append(ticket_mail_service(ticket_mailer(node, settings)))
    return services


def ticket_mailer(node: NodeRuntime, settings: Settings) -> TicketMailer:
    """The primary's ticket mail: debounced batches from the outbox, and the daily overdue notices."""
    tickets = node.stores.tickets

    async def find_overdue(today: datetime.date) -> list[dict[str, Any]]:
        # Pages of whole tickets: 50, or as many as the search's byte budget holds (PageTooLarge says how many).
        found: list[dict[str, Any]] = []
        size = 50
        while len(found) < MAX_OVERDUE:
            try:
                rows, total = await tickets.search(f"status:open due:<{today.isoformat()}", len(found), size, 1)
            except PageTooLarge as exc:
                if size == 1:  # cannot happen (a ticket is far below the budget); never loop on it
                    raise
                size = max(min(exc.fits, size - 1), 1)
                continue
            found += rows
            if not rows or len(found) >= total:
                break
        return found[:MAX_OVERDUE]

    return TicketMailer(node.stores, node.fence, smtp_config(settings), tickets.get, find_overdue=find_overdue,
                        collapse=collapse, config=TicketMailConfig(overdue_time=settings.ticket_overdue_time))


def maintenance_config(settings: Settings) -> MaintenanceConfig:
    return MaintenanceConfig(
        job_max_rows=settings.job_max_rows,
        job_expire_days=settings.job_expire_days,
        activity_max_rows=settings.activity_max_rows,
        activity_expire_days=settings.activity_expire_days,
        snapshot_max_rows=settings.snapshot_max_rows,
        snapshot_expire_days=settings.snapshot_expire_days,
        max_sessions_per_user=settings.max_sessions_per_user,
    )


def timeline_retention_s(settings: Settings) -> dict[str, int]:
    """Seconds each monitor time series system keeps (storage/timeseries.py)."""
    days = {"hourly": settings.timeline_hourly_days, "daily": settings.timeline_daily_days,
            "monthly": settings.timeline_monthly_days, "yearly": settings.timeline_yearly_days}  # fmt: skip
    return {system: n * 86400 for system, n in days.items()}


def file_store(settings: Settings, db: Database) -> FileStore:
    """The `--file-store` backend; a directory must exist or be creatable (checked before the node starts)."""
    if settings.file_store not in ("redis", "s3"):
        try:
            Path(settings.file_store).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--file-store {settings.file_store!r}: {exc.strerror or exc}") from None
    return open_file_store(settings.file_store, db, max_file_bytes=settings.file_max_bytes,
                           max_bytes_total=settings.file_store_max_bytes, s3=settings.s3_config())  # fmt: skip


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _open_stores(settings: Settings, stack: contextlib.AsyncExitStack, url: str) -> tuple[Database, Stores]:
    """The store client and the stores of this process (the node process and each worker have their own)."""
    client = connect(url, max_connections=settings.redis_pool, pool_timeout=settings.redis_pool_timeout)
    db = Database(client, Keyspace(settings.cluster))
    stack.push_async_callback(db.aclose)
    try:
        await wait_reachable(client)
    except StorageError:
        raise ConfigError(f"Redis at {redacted(url)} is unreachable") from None
    try:
        secret_key = await ensure_secret_key(db, settings.secret_key)
    except SecretKeyMismatch as exc:
        raise ConfigError(f"--secret-key: {exc}") from None
    files = file_store(settings, db)
    stack.push_async_callback(close_file_store, files)  # after everything that uses it has stopped
    try:
        await check_file_store(files)
    except StorageError as exc:
        raise ConfigError(f"--file-store {settings.file_store}: {exc}") from None
    stores = Stores.open(db, secret_key, files=files, timeline_retention_s=timeline_retention_s(settings))
    stores.snapshots.max_bytes = settings.snapshot_max_mb * 1024 * 1024
    stores.buckets.max_files = settings.bucket_max_files
    stores.buckets.max_file_bytes = settings.bucket_max_file_mb * 1024 * 1024
    stores.ticket_outbox.enabled = settings.ticket_email
    stores.ticket_outbox.debounce_s = settings.ticket_debounce_s
    return db, stores


async def _start_http(
    settings: Settings, stack: contextlib.AsyncExitStack, app: web.Application, *, shared: bool
) -> web.AppRunner:
    """The HTTP server on --bind (`shared`: with SO_REUSEPORT, one port for every process of the node)."""
    runner = ApiRunner(
        app,
        **RUNNER_OPTIONS,
        handle_signals=False,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
    )
    await runner.setup()
    stack.callback(flush_access_log)  # runs after the cleanup below: the last requests' lines are kept
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=2.0, reuse_port=shared or None)
    try:
        await site.start()
    except OSError as exc:
        raise ConfigError(f"--bind {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    return runner


async def serve(settings: Settings, argv: Sequence[str] = ()) -> None:
    """The node process: the store (embedded unless --redis), the node runtime with every primary service, the
    HTTP server, the node's agent, and the HTTP workers (api/workers.py) when `--workers` is above 1."""
    check_port_free(settings.host, settings.port)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--data-dir {str(settings.data_dir)!r}: {exc.strerror or exc}") from None
    workers = settings.workers if settings.port else 1  # a port picked by the kernel cannot be shared
    stop = _stop_on_signals()

    async with contextlib.AsyncExitStack() as stack:
        url = settings.redis_url
        if url is None:
            try:
                embedded = EmbeddedServer(settings.data_dir)  # finding the binary may fail too
                url = await embedded.start()
            except StorageError as exc:
                raise ConfigError(str(exc)) from None
            stack.callback(embedded.stop)
            log.info("embedded_store_started", socket=url, binary=embedded.binary)
        db, stores = await _open_stores(settings, stack, url)
        node_id = load_node_id(settings.data_dir)
        node = NodeRuntime(
            db,
            node_id,
            settings.advertise_url,
            lease_ms=settings.lease_ms,
            services=[first_start],
            stores=stores,
            control=db.with_own_pool(),  # the lease and the heartbeat never wait behind requests
        )
        node.services += [
            *job_services(node, settings),
            scheduler_service(scheduler_config(settings)),
            maintenance_service(maintenance_config(settings)),
        ]
        app = create_app(settings, node)
        runner = await _start_http(settings, stack, app, shared=workers > 1)
        if workers > 1:  # the workers hand calls of the primary services to this process here
            private = socket_path(settings.data_dir)
            private.unlink(missing_ok=True)
            old = os.umask(0o177)
            try:
                await web.UnixSite(runner, str(private), shutdown_timeout=2.0).start()
            finally:
                os.umask(old)

        await node.start()
        stack.push_async_callback(node.stop)
        if workers > 1:
            pool = WorkerPool(node, workers, argv, {"PODIUM_REDIS_URL": url}, settings.data_dir)
            await pool.start()
            stack.push_async_callback(pool.stop)  # before the node stops: workers end while the store is up
        if settings.agent:
            child = ChildAgent(settings, local_url(settings, settings.port), stores.secret_key)
            await child.start()
            stack.push_async_callback(child.stop)
        log.info(
            "node_started",
            node=node_id,
            version=__version__,
            bind=f"{settings.host}:{settings.port}",
            url=node.url,
            redis=redacted(url),
            cluster=settings.cluster,
            workers=workers,
        )
        await stop.wait()
        log.info("node_stopping", node=node_id)


async def serve_worker(settings: Settings) -> None:
    """An HTTP worker of a node (api/workers.py): the node's identity and store, its role as the node process
    says, no election and no primary service."""
    die_with_parent()
    stop = _stop_on_signals()
    url = settings.redis_url
    if url is None:
        raise ConfigError(f"{WORKER_ENV} is set but no store URL: a worker is started by its node process")
    async with contextlib.AsyncExitStack() as stack:
        db, stores = await _open_stores(settings, stack, url)
        node = NodeRuntime(db, load_node_id(settings.data_dir), settings.advertise_url, lease_ms=settings.lease_ms,
                           stores=stores, control=db.with_own_pool(), follower=True)  # fmt: skip
        app = create_app(settings, node)
        forward = app[FORWARD] = Forwarder(socket_path(settings.data_dir))
        stack.push_async_callback(forward.close)
        await _start_http(settings, stack, app, shared=True)
        await node.start()
        stack.push_async_callback(node.stop)
        following = asyncio.create_task(follow(node, stop))
        counting = asyncio.create_task(publish_counts(node, settings.data_dir, settings.worker_index, stop))
        log.info("worker_started", node=node.node_id, worker=settings.worker_index, pid=os.getpid())
        await stop.wait()
        for task in (following, counting):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
