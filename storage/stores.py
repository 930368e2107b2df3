"""Every store of one node, built once from a Database and shared by all layers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .actions import ActionStore
from .activity import ActivityStore
from .agents import AgentStreams
from .alerts import AlertStore
from .alertstate import AlertStateStore
from .buckets import BucketStore
from .bus import InvalidationBus
from .config import ConfigStore
from .connection import Database
from .dailystats import DailyStats
from .definitions import DefinitionStore
from .files import BadPath, FileStore, RedisFileStore
from .hostdata import HostDataStore
from .internaljobs import InternalJobStore
from .jobs import JobStore
from .logins import LoginGuard
from .logs import LogStore
from .ratelimit import RateLimiter
from .servers import ServerStore
from .snapshots import SnapshotStore
from .state import StateStore
from .ticketmail import TicketOutbox
from .tickets import TicketStore
from .timeseries import DEFAULT_RETENTION_S, QuickmonStore, TimelineStore
from .users import UserStore


def job_files_prefix(job_id: str) -> str:
    """Where the files a job's agent uploaded live in the file store (`files/jobs/<job>/<random>/<name>`)."""
    return f"files/jobs/{job_id}/"


def job_input_uploads(job: Mapping[str, Any]) -> list[str]:
    """The input files a deleted job takes with it: the uploads it owns (`files/users/...` entries flagged `owned`:
    the first job given that upload, see Stores.claim_upload), unless the job was retried (its retry, which copies
    the input, owns them now). Bucket and ticket files stay with their owner, a parent's output with the parent.
    ⚠ xyOps deletes every input file not flagged bucket or ticket, so deleting a chained job also deleted its
    parent's output files, and deleting a retried job its retry's input."""
    given = job.get("input")
    files = given.get("files") if isinstance(given, Mapping) else None
    if not isinstance(files, list) or job.get("retried"):
        return []
    return [str(f["path"]) for f in files
            if isinstance(f, Mapping) and isinstance(f.get("path"), str) and str(f["path"]).startswith("files/users/")
            and f.get("owned") is True and not f.get("bucket") and not f.get("ticket")]  # fmt: skip


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
    buckets: BucketStore
    tickets: TicketStore
    ticket_outbox: TicketOutbox
    stats: DailyStats
    internal: InternalJobStore
    config: ConfigStore
    secret_key: str = field(default="", repr=False)  # the cluster secret (storage/secretkey.py)

    @classmethod
    def open(
        cls, db: Database, secret_key: str = "", *, files: FileStore | None = None,
        timeline_retention_s: Mapping[str, int] = DEFAULT_RETENTION_S,
    ) -> Stores:  # fmt: skip
        """`files`: the file store backend (default: the Redis one with its default caps);
        `timeline_retention_s`: seconds each monitor time series system keeps (storage/timeseries.py)."""
        bus = InvalidationBus(db)
        stats = DailyStats(db)
        files = files if files is not None else RedisFileStore(db)
        return cls(
            db=db,
            bus=bus,
            defs=DefinitionStore(db, bus),
            users=UserStore(db, bus),
            logins=LoginGuard(db),
            state=StateStore(db, bus),
            rates=RateLimiter(db),
            activity=ActivityStore(db, stats),
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
            buckets=BucketStore(db, files),
            tickets=TicketStore(db),
            ticket_outbox=TicketOutbox(db),
            stats=stats,
            internal=InternalJobStore(db),
            config=ConfigStore(db),
            secret_key=secret_key,
        )

    async def drop_job_output(self, jobs: Iterable[str | Mapping[str, Any]]) -> None:
        """Delete what deleted jobs left in the stores: the live and stored log, the uploaded files and, for a
        job given as its record rather than its id, its own input uploads (job_input_uploads). Called after the
        job records are deleted (delete_job, retention, an event's history): a crash in between leaves orphan
        files, which is accepted, since nothing can reach them once the job is gone (a file is served only to
        those who may see its job, an upload only to whoever holds its random URL) and no record ever points at
        a missing file."""
        for job in jobs:
            job_id = job if isinstance(job, str) else str(job.get("id") or "")
            if not job_id:
                continue
            await self.logs.drop(job_id)
            await self.files.delete_prefix(job_files_prefix(job_id))
            for path in () if isinstance(job, str) else job_input_uploads(job):
                await self.drop_upload(path)

    async def claim_upload(self, path: str) -> bool:
        """Hand a user upload to a new job as input: True for the first job given it (which then owns it)."""
        return bool(await self.db.client.sadd(self.db.keys.uploads_given, path))

    async def drop_upload(self, path: str) -> None:
        """Delete a user upload its owning job no longer needs."""
        try:
            await self.files.delete(path)
        except BadPath:  # a record written before input files were checked: nothing of ours to delete
            return
        await self.db.client.srem(self.db.keys.uploads_given, path)
