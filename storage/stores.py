"""Every store of one node, built once from a Database and shared by all layers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .actions import ActionStore
from .activity import ActivityStore
from .agents import AgentStreams
from .alerts import AlertStore
from .alertstate import AlertStateStore
from .bus import InvalidationBus
from .connection import Database
from .definitions import DefinitionStore
from .files import FileStore, RedisFileStore
from .hostdata import HostDataStore
from .jobs import JobStore
from .logins import LoginGuard
from .logs import LogStore
from .ratelimit import RateLimiter
from .servers import ServerStore
from .snapshots import SnapshotStore
from .state import StateStore
from .ticketmail import TicketOutbox
from .timeseries import DEFAULT_RETENTION_S, QuickmonStore, TimelineStore
from .users import UserStore


def job_files_prefix(job_id: str) -> str:
    """Where the files a job's agent uploaded live in the file store (`files/jobs/<job>/<random>/<name>`)."""
    return f"files/jobs/{job_id}/"


@dataclass(slots=True)
class Stores:
    db: Database
    bus: InvalidationBus
    defs: DefinitionStore
    users: UserStore
    logins: LoginGuard
    state: StateStore
    rates: RateLimiter
    activity: ActivityStore
    jobs: JobStore
    agents: AgentStreams
    servers: ServerStore
    files: FileStore
    logs: LogStore
    actions: ActionStore
    alerts: AlertStore
    hosts: HostDataStore
    alertstate: AlertStateStore
    timelines: TimelineStore
    quickmon: QuickmonStore
    snapshots: SnapshotStore
    ticket_outbox: TicketOutbox
    secret_key: str = field(default="", repr=False)  # the cluster secret (storage/secretkey.py)

    @classmethod
    def open(
        cls, db: Database, secret_key: str = "", *, files: FileStore | None = None,
        timeline_retention_s: Mapping[str, int] = DEFAULT_RETENTION_S,
    ) -> Stores:  # fmt: skip
        """`files`: the file store backend (default: the Redis one with its default caps);
        `timeline_retention_s`: seconds each monitor time series system keeps (storage/timeseries.py)."""
        bus = InvalidationBus(db)
        files = files if files is not None else RedisFileStore(db)
        return cls(
            db=db,
            bus=bus,
            defs=DefinitionStore(db, bus),
            users=UserStore(db, bus),
            logins=LoginGuard(db),
            state=StateStore(db, bus),
            rates=RateLimiter(db),
            activity=ActivityStore(db),
            jobs=JobStore(db),
            agents=AgentStreams(db),
            servers=ServerStore(db),
            files=files,
            logs=LogStore(db, files),
            actions=ActionStore(db),
            alerts=AlertStore(db),
            hosts=HostDataStore(db),
            alertstate=AlertStateStore(db),
            timelines=TimelineStore(db, timeline_retention_s),
            quickmon=QuickmonStore(db),
            snapshots=SnapshotStore(db),
            ticket_outbox=TicketOutbox(db),
            secret_key=secret_key,
        )

    async def drop_job_output(self, job_ids: Iterable[str]) -> None:
        """Delete what deleted jobs left in the stores: the live and stored log, and the uploaded files. Called
        after the job records are deleted (delete_job, retention, an event's history): a crash in between leaves
        orphan files, which is accepted, since nothing can reach them once the job is gone (a file is served only
        to those who may see its job) and no record ever points at a missing file."""
        for job_id in job_ids:
            await self.logs.drop(job_id)
            await self.files.delete_prefix(job_files_prefix(job_id))
