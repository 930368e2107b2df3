"""Every Redis key Podium uses, built from one cluster prefix.

No other module spells a key. The README's keyspace table mirrors this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def valid_cluster_name(name: str) -> bool:
    return bool(_CLUSTER_NAME.fullmatch(name))


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Keys of one cluster. `cluster` becomes the prefix `<cluster>:`."""

    cluster: str = "podium"

    def __post_init__(self) -> None:
        if not valid_cluster_name(self.cluster):
            raise ValueError(f"invalid cluster name: {self.cluster!r} (letters, digits, _ . - only)")

    def key(self, *parts: str) -> str:
        return ":".join((self.cluster, *parts))

    # -- election -------------------------------------------------------------
    @property
    def leader(self) -> str:
        """STRING node id of the primary, with a PX lease."""
        return self.key("leader")

    @property
    def epoch(self) -> str:
        """STRING integer fencing token, INCR'd on every successful election."""
        return self.key("epoch")

    # -- node registry --------------------------------------------------------
    @property
    def nodes(self) -> str:
        """ZSET node id -> expiry (ms, Redis clock)."""
        return self.key("nodes")

    def node(self, node_id: str) -> str:
        """STRING msgpack node record, PX = heartbeat TTL."""
        return self.key("node", node_id)

    # -- cluster-wide settings ------------------------------------------------
    @property
    def secret_key(self) -> str:
        """STRING cluster secret key, generated once (SET NX)."""
        return self.key("config", "secret_key")

    @property
    def setup_done(self) -> str:
        """STRING set once (fenced SET NX) when the first-start objects have been created."""
        return self.key("config", "setup")

    # -- cache invalidation ---------------------------------------------------
    @property
    def invalidate_channel(self) -> str:
        """Pub/sub channel: '<kind>|<name>|<version>' after every cached object changes."""
        return self.key("chan", "invalidate")

    @property
    def versions(self) -> str:
        """HASH '<kind>' or '<kind>|<name>' -> version counter, bumped with every publish."""
        return self.key("versions")

    # -- definitions (generic store) ------------------------------------------
    def definition(self, family: str, obj_id: str) -> str:
        """STRING msgpack record of one definition object."""
        return self.key("def", family, obj_id)

    def definitions(self, family: str) -> str:
        """ZSET id -> list position of a family (the xyOps list order)."""
        return self.key("defs", family)

    # -- users and sessions ---------------------------------------------------
    def user(self, norm: str) -> str:
        """STRING msgpack user record (username lower-cased, non-word characters removed)."""
        return self.key("user", norm)

    @property
    def users(self) -> str:
        """ZSET normalised username -> created (ms)."""
        return self.key("users")

    def session(self, digest: str) -> str:
        """STRING msgpack session, PX to expiry; keyed by sha256 of the session id, never the id."""
        return self.key("session", digest)

    def user_sessions(self, norm: str) -> str:
        """SET of session digests belonging to one user (logout_all, user delete)."""
        return self.key("user_sessions", norm)

    def security_log(self, norm: str) -> str:
        """LIST msgpack security entries of one user, newest first, capped."""
        return self.key("security", norm)

    def login_guard(self, norm: str) -> str:
        """HASH failed-login counters and temporary locks of one user name (existing or not), overall and
        per client address: n, w, locks, until and n:<addr>, w:<addr>, locks:<addr>, until:<addr>
        (storage/logins.py). PX: forgotten after a quiet window plus the longest lock."""
        return self.key("login_guard", norm)

    def login_known(self, norm: str) -> str:
        """HASH client address -> last successful login (ms) of one user name; PX 30 days from the last. The
        name-wide temporary lock does not apply to these addresses (storage/logins.py)."""
        return self.key("login_known", norm)

    def ip_login_failures(self, ip: str) -> str:
        """STRING failed-login counter of one client address, per window."""
        return self.key("login_fail", "ip", ip)

    def rate(self, key_id: str) -> str:
        """HASH {sec, count}: the current Redis-clock second's request count of one API key (TTL 2 s)."""
        return self.key("rate", key_id)

    # -- global state and activity -------------------------------------------
    @property
    def state(self) -> str:
        """STRING msgpack global state ({scheduler: {enabled}}, ...)."""
        return self.key("state")

    def activity(self, record_id: str) -> str:
        """STRING msgpack activity record."""
        return self.key("activity", record_id)

    # -- jobs and the scheduler ----------------------------------------------
    def job(self, job_id: str) -> str:
        """STRING msgpack job record (live while active, final once complete)."""
        return self.key("job", job_id)

    def job_timelines(self, job_id: str) -> str:
        """STRING msgpack {second, minute} of a running job's process timelines, kept apart from its record (which
        is rewritten on every report) and written at most every few seconds; in the final record once complete."""
        return self.key("job_timelines", job_id)

    @property
    def jobs_active(self) -> str:
        """ZSET job id -> started (epoch s) of every job not yet complete."""
        return self.key("jobs", "active")

    @property
    def jobs_unindexed(self) -> str:
        """SET completed job ids whose search index entries are still to be written."""
        return self.key("jobs", "unindexed")

    def sched_claim(self, event_id: str, epoch: int) -> str:
        """STRING the job id launched for one scheduled second of one event (SET NX, expires)."""
        return self.key("sched", "claim", event_id, str(epoch))

    @property
    def sched_cursor(self) -> str:
        """HASH event id -> last scheduled second the scheduler has dealt with."""
        return self.key("sched", "cursor")

    @property
    def sched_nth(self) -> str:
        """HASH event id -> scheduled minutes counted by its `nth` trigger."""
        return self.key("sched", "nth")

    # -- servers (agents) --------------------------------------------------------
    def server(self, server_id: str) -> str:
        """STRING msgpack server record, kept after the agent disconnects (storage/servers.py)."""
        return self.key("server", server_id)

    @property
    def servers_online(self) -> str:
        """ZSET server id -> liveness expiry (ms, Redis clock), renewed by the node holding its socket."""
        return self.key("servers", "online")

    @property
    def servers_owner(self) -> str:
        """HASH server id -> '<node id>|<connection id>' of the socket that joined last (a newer join wins)."""
        return self.key("servers", "owner")

    def server_indexed(self, server_id: str) -> str:
        """STRING msgpack {s: slot, o: order, f: fields}: one server exactly as the `servers` search index holds it,
        written in the same MULTI as its index entries, so a re-index diffs against the truth (storage/servers.py)."""
        return self.key("server_indexed", server_id)

    def enrol_token(self, digest: str) -> str:
        """STRING msgpack enrolment grant of `get_satellite_token`, keyed by sha256 of the token; EX = expiry."""
        return self.key("enrol", digest)

    # -- agent streams (storage/agents.py) ---------------------------------------------
    def agent_commands(self, server_id: str) -> str:
        """STREAM frames for one agent (launch_job, abort_job, update, ...), read by the node holding its
        socket; capped by MAXLEN."""
        return self.key("agent", "cmds", server_id)

    @property
    def agent_cursors(self) -> str:
        """HASH server id -> id of the last command stream entry sent to that agent's socket."""
        return self.key("agent", "cursors")

    def job_delivered(self, job_id: str) -> str:
        """STRING set (NX, EX 1 day) when a job's `launch_job` went to a foreign agent (xySat), which does not
        drop a launch it already runs: a command stream read again after a node died is not sent twice."""
        return self.key("agent", "delivered", job_id)

    @property
    def dispatch_inbox(self) -> str:
        """STREAM agent reports for the primary (jobs updates, finishes, meta rows), from every node."""
        return self.key("dispatch", "inbox")

    @property
    def dispatch_cursor(self) -> str:
        """STRING id of the last inbox entry the primary has applied (fenced)."""
        return self.key("dispatch", "cursor")

    @property
    def dispatch_robin(self) -> str:
        """HASH event id -> round_robin counter of server selection."""
        return self.key("dispatch", "robin")

    # -- job actions and event state (storage/actions.py) ------------------------------------
    def action_run(self, run_id: str) -> str:
        """STRING msgpack of one action run {id, job, condition, action, index, kind}: written with the change
        that calls for it (a finish, a start, a limit), deleted with the result it recorded."""
        return self.key("action", run_id)

    @property
    def actions_due(self) -> str:
        """ZSET run id -> epoch s from which it may run: runs nobody has claimed yet."""
        return self.key("actions", "due")

    @property
    def actions_claimed(self) -> str:
        """ZSET run id -> epoch s of the claim: runs a primary took (fenced) and has not recorded yet."""
        return self.key("actions", "claimed")

    def event_state(self, event_id: str) -> str:
        """HASH an event's job state: last_job, last_code, last_completed, total_elapsed, total_count."""
        return self.key("event_state", event_id)

    def event_day(self, event_id: str, day: str) -> str:
        """HASH completion condition -> jobs of the event that met it on `day` (YYYY-MM-DD, UTC; EX 2 days):
        what the `day` limit counts."""
        return self.key("event_day", event_id, day)

    def daily(self, kind: str, obj_id: str, day: str) -> str:
        """STRING uses of a web hook or channel on `day` (YYYY-MM-DD, UTC; EX 2 days): their `max_per_day` caps."""
        return self.key("daily", kind, obj_id, day)

    # -- internal jobs (storage/internaljobs.py) ------------------------------------------
    def internal_job(self, job_id: str) -> str:
        """STRING msgpack record of one internal job (maintenance, bulk work), live and then final."""
        return self.key("internal_job", job_id)

    @property
    def internal_jobs(self) -> str:
        """ZSET internal job id -> started (epoch s) of every internal job kept (running and finished)."""
        return self.key("internal_jobs", "all")

    @property
    def internal_jobs_running(self) -> str:
        """ZSET internal job id -> started (epoch s) of the internal jobs not finished yet."""
        return self.key("internal_jobs", "running")

    # -- daily stats (storage/dailystats.py) ----------------------------------------------
    def stats_day(self, day: str) -> str:
        """HASH dotted counter path -> count of one UTC day (YYYY-MM-DD; `timeStart` = when it began counting,
        EX 3 days): the xyOps daily `stats` object, flattened."""
        return self.key("stats_day", day)

    @property
    def stats_history(self) -> str:
        """LIST msgpack daily stats objects set aside by a reset, newest first, capped (xyOps `global/stats`)."""
        return self.key("stats", "history")

    # -- runtime configuration (storage/config.py) ----------------------------------------
    @property
    def config_overrides(self) -> str:
        """STRING msgpack {setting: value} of the cluster-wide settings changed by admin_update_config."""
        return self.key("config", "overrides")

    # -- job logs (storage/logs.py) ------------------------------------------------------
    def job_log(self, job_id: str) -> str:
        """STRING live output of a running job, appended in arrival order; moved to the file store on finish."""
        return self.key("joblog", job_id)

    def job_log_meta(self, job_id: str) -> str:
        """HASH of a live log: recv (bytes received, the agent's offset), size (bytes kept), cut (1 once
        truncated at the cap)."""
        return self.key("joblog_meta", job_id)

    # -- file store, Redis backend (storage/files) ------------------------------------------
    def file(self, path: str) -> str:
        """STRING bytes of one stored file (`files/jobs/<job>/<random>/<name>`, `logs/jobs/<job>/log.txt.gz`)."""
        return self.key("file", path)

    def file_meta(self, path: str) -> str:
        """HASH {size, modified, type} of one stored file."""
        return self.key("file_meta", path)

    @property
    def files_bytes(self) -> str:
        """STRING total bytes held by the Redis file store (checked against its cap)."""
        return self.key("files", "bytes")

    @property
    def import_lock(self) -> str:
        """STRING redis-py Lock token of the admin_import_data that is writing now (PX 10 min): one at a time."""
        return self.key("import_lock")

    def transfer_token(self, digest: str) -> str:
        """STRING msgpack {username, params} of a get_transfer_token token, keyed by sha256 of the token; EX 60 s;
        taken once (GETDEL)."""
        return self.key("transfer_token", digest)

    @property
    def uploads_given(self) -> str:
        """SET paths of user uploads already handed to a job as input: the first job given one owns it (deletes it
        with itself); a later job given the same upload only lists it."""
        return self.key("uploads", "given")

    @property
    def files_index(self) -> str:
        """ZSET every path held by the Redis file store, all scored 0, so a prefix is one ZRANGEBYLEX."""
        return self.key("files", "index")

    def file_staging(self, token: str) -> str:
        """STRING an upload the Redis file store is still receiving (APPENDed in chunks, EX 1 h), renamed onto
        file(path) once complete."""
        return self.key("file_staging", token)

    # -- monitoring: host data and alert state (storage/hostdata.py, storage/alertstate.py) --------------
    def host_data(self, server_id: str) -> str:
        """STRING msgpack host record {date, server, hostname, ip, groups, data: ServerMonitorData + monitors and
        deltas}: the server's last minute sample (xyOps hosts/<id>/data)."""
        return self.key("host_data", server_id)

    @property
    def alert_inbox(self) -> str:
        """STREAM per-sample alert results {server, date, results: {alert id: message | nil}, ...} from the node
        holding each agent's socket, applied in order by the primary (cluster/monitoring/alertservice.py)."""
        return self.key("alerts", "inbox")

    @property
    def alert_cursor(self) -> str:
        """STRING the last alert_inbox entry id the primary applied (written in the same fenced step)."""
        return self.key("alerts", "cursor")

    def alert_warm(self, server_id: str) -> str:
        """HASH alert id -> msgpack warm entry {id, alert, server, date, modified, message, count, notified} of one
        server: the sample counters of every alert warming up or active there."""
        return self.key("alert_warm", server_id)

    @property
    def alert_servers(self) -> str:
        """ZSET server id -> when its warm entries were last refreshed (epoch s): what the stale sweep reads."""
        return self.key("alerts", "servers")

    def alert_results(self, invocation_id: str) -> str:
        """LIST msgpack action results {run, type, condition, date, code, description, details, elapsed_ms, ...} of
        one alert invocation, appended in the fenced step that retires each action run (merged into its `actions`)."""
        return self.key("alert_results", invocation_id)

    @property
    def alerts_clearing(self) -> str:
        """ZSET invocation id -> when it cleared (epoch s): cleared alerts whose records are still to be marked
        inactive (a compare-and-swap after the fenced batch that cleared them)."""
        return self.key("alerts", "clearing")

    @property
    def alerts_active(self) -> str:
        """HASH '<server>-<alert id>' -> invocation id of every active (fired, not cleared) alert."""
        return self.key("alerts", "active")
    # -- alert invocations (storage/alerts.py) ------------------------------------------
    def alert_invocation(self, invocation_id: str) -> str:
        """STRING msgpack alert invocation {id, active, alert, server, groups, date, modified, ...}, written by
        the primary's alert evaluator (and rewritten when the alert clears), kept after it clears."""
        return self.key("alert_inv", invocation_id)

    @property
    def alerts_unindexed(self) -> str:
        """SET invocation ids written (created, cleared, changed, deleted) whose search entries are still to
        be brought in line with the record (storage/alerts.py index_pending)."""
        return self.key("alert_invs", "unindexed")

    def alert_indexed(self, invocation_id: str) -> str:
        """STRING msgpack {s: slot, o: order, f: fields}: one invocation exactly as the `alerts` search index
        holds it, written in the same MULTI as its index entries, so a re-index moves the old entries."""
        return self.key("alert_inv_indexed", invocation_id)
    # -- monitoring time series (storage/timeseries.py) ------------------------------------
    def timeline(self, server_id: str, system: str) -> str:
        """LIST one server's time series in one system (hourly, daily, monthly, yearly), oldest first: one
        msgpack item per bucket, contiguous (gaps hold stubs), `[epoch_div, count, [column, total, ...],
        [alert id, ...]?]` or the stub `[epoch_div]`; trimmed to the system's retention by maintenance."""
        return self.key("timeline", server_id, system)

    @property
    def timelines(self) -> str:
        """ZSET server id -> date (epoch s) of its last sample in its timelines: what maintenance trims."""
        return self.key("timelines")

    @property
    def timeline_columns(self) -> str:
        """HASH monitor id -> column number, shared by every timeline item (append-only)."""
        return self.key("timeline_columns")

    def quickmon(self, server_id: str) -> str:
        """LIST msgpack QuickMon samples `{date, <quickmon id>: value}` of one server, oldest first, the last
        60; EX 5 minutes after the last one."""
        return self.key("quickmon", server_id)

    # -- snapshots (storage/snapshots.py) ------------------------------------------
    def snapshot(self, snapshot_id: str) -> str:
        """STRING msgpack snapshot of a server or a group {id, type, server, groups, source, date, alerts, jobs,
        data, quickmon, ...} (xyOps unbase `snapshots` record), written once by whichever node takes it."""
        return self.key("snapshot", snapshot_id)

    def snapshot_brief(self, snapshot_id: str) -> str:
        """STRING msgpack the same snapshot without its heavy parts (process and connection lists, mounts,
        plugin output, a group's member data): what `search_snapshots` answers unless asked to be verbose."""
        return self.key("snapshot_brief", snapshot_id)

    @property
    def snapshots_unindexed(self) -> str:
        """SET snapshot ids written whose search entries are still to be written (SnapshotStore.index_pending)."""
        return self.key("snapshots", "unindexed")

    # -- snapshot budget and reuse (storage/snapshots.py, storage/hostdata.py; issue 11 review) ---------------
    @property
    def snapshot_sizes(self) -> str:
        """HASH snapshot id -> packed bytes of its record and brief (what its delete gives back to the budget)."""
        return self.key("snapshots", "sizes")

    @property
    def snapshots_bytes(self) -> str:
        """STRING integer: packed bytes of every stored snapshot (the sum of `snapshot_sizes`), kept by add and
        delete, recounted by maintenance."""
        return self.key("snapshots", "bytes")

    def snapshot_of_sample(self, server_id: str, source: str, date: str) -> str:
        """STRING the id of the snapshot a job (or alert) action took of one server's sample dated `date`: the
        next job (or alert) action of that sample reuses it; EX a few minutes."""
        return self.key("snapshot_of_sample", server_id, source, date)

    def host_brief(self, server_id: str) -> str:
        """STRING msgpack the server's last sample without its heavy parts (process and connection lists,
        mounts, plugin output): what a group snapshot keeps of each member."""
        return self.key("host_brief", server_id)

    # -- buckets (storage/buckets.py; issue 12) --------------------------------------------------------------
    def bucket(self, bucket_id: str) -> str:
        """HASH the contents of one bucket: `data` (msgpack object), `files` (msgpack list of File objects) and
        `rev` (integer, bumped by every change: the compare-and-set of concurrent writers)."""
        return self.key("bucket", bucket_id)

    def bucket_replace_lock(self, bucket_id: str) -> str:
        """STRING a lock token (redis-py Lock, PX): held by the writer saving a bucket's list with files replaced
        in place and copying their bytes, so concurrent replacements copy in the order they were saved."""
        return self.key("bucket_replace", bucket_id)
    # -- tickets (storage/tickets.py; issue 12) -------------------------------------------------------
    def ticket(self, ticket_id: str) -> str:
        """STRING msgpack ticket {id, num, subject, body, type, status, category, server, assignees, cc, notify,
        due, tags, events, files, changes, jobs, alerts, username, created, modified}; written only with its
        search entries, in one fenced script."""
        return self.key("ticket", ticket_id)

    @property
    def ticket_counter(self) -> str:
        """STRING integer: the last ticket number given out (INCR in the script that stores the ticket)."""
        return self.key("tickets", "num")

    @property
    def ticket_nums(self) -> str:
        """HASH ticket number -> ticket id (get_ticket by `num`), written and deleted with the ticket."""
        return self.key("tickets", "nums")
    # -- ticket mail (storage/ticketmail.py; issue 12) -----------------------------------------------
    @property
    def ticketmail_due(self) -> str:
        """ZSET ticket id -> when its pending mail batch is due (epoch s, Redis clock): the debounce outbox."""
        return self.key("ticketmail", "due")

    def ticketmail_batch(self, ticket_id: str) -> str:
        """LIST msgpack changes of one ticket waiting to be mailed, in arrival order (bounded)."""
        return self.key("ticketmail_batch", ticket_id)

    def ticketmail_meta(self, ticket_id: str) -> str:
        """HASH {bytes, dropped, now} of one ticket's pending batch: packed size, changes left out past the
        bounds, 1 when the batch is due at once (a new ticket's mail)."""
        return self.key("ticketmail_meta", ticket_id)

    @property
    def ticketmail_claimed(self) -> str:
        """ZSET claim id -> when it was claimed (epoch s): batches a primary took (fenced) and has not finished."""
        return self.key("ticketmail", "claimed")

    def ticketmail_claim(self, claim_id: str) -> str:
        """HASH {ticket, node, epoch, claimed, changes, dropped} of one claimed batch, deleted once mailed."""
        return self.key("ticketmail_claim", claim_id)

    def ticket_overdue(self, day: str) -> str:
        """HASH ticket id -> epoch of the primary that sent its overdue notice on `day` (local YYYY-MM-DD), and
        ':done' once all of that day's went; EX 3 days."""
        return self.key("ticket_overdue", day)

    # -- search indexes (storage/search) ------------------------------------------
    def index(self, index: str, *parts: str) -> str:
        """Keys of one search index: <p>:idx:<index>:<parts...> (layout documented in storage/search)."""
        return self.key("idx", index, *parts)

    def probe(self, name: str) -> str:
        """STRING scratch keys written by fenced-write self tests."""
        return self.key("probe", name)
