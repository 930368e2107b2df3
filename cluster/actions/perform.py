"""What each action type does (execution reference 1.4, digest 3.1 Actions), given a claimed run.

`Performer.perform(run)` returns the run's Outcome and, for actions that change their own job (tag, label,
run_event's link to the job it launched), the change to apply with the result. The outside-world senders
(email, web hook, action plugin) live in their own modules; this one decides who, what and with which data.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from storage.definitions import Family
from storage.errors import Conflict
from storage.families import CATEGORIES, CHANNELS, EVENTS, PLUGINS, WEB_HOOKS

from ..dispatch import finish as finishing
from ..expressions import templates
from ..launcher import Launch, LaunchError, launch_job
from ..monitoring.snapshots import SnapshotError, run_snapshot_id, take_server_snapshot
from . import bucket
from .email import email_template, job_email_data, send_email
from .plugin import run_action_plugin
from .record import Change
from .result import Outcome
from .ticket import make_ticket
from .webhook import job_hook_data, run_web_hook

if TYPE_CHECKING:
    from ..dispatch.machine import Dispatcher
    from ..node import NodeRuntime
    from .email import SmtpConfig

log = structlog.get_logger("podium.actions")
Record = dict[str, Any]
Result = tuple[Outcome, Change | None]
MAX_USER_DATA = 64 * 1024  # a server's userData, as jobs' serverData adds to it
# Types a new primary may run again when a predecessor claimed them and died before recording: repeating them
# changes nothing (a state set again, a launch guarded by a claim of its own), unlike a message sent twice.
REPEATABLE = frozenset({"tag", "label", "run_event", "disable", "delete", "snapshot", "ticket", "store",
                        "fetch", finishing.SERVER_DATA, finishing.EVENT_CHANGE, finishing.CLEAR_ALERT})  # fmt: skip
_TAGS = re.compile(r"<[^>]*>")


@dataclass(slots=True)
class Context:
    node: NodeRuntime
    dispatcher: Dispatcher
    session: aiohttp.ClientSession
    base_url: str  # links in messages
    smtp: SmtpConfig
    local_url: str = ""  # this node, for action plugins that call back
    plugin_dir: Path | None = None  # where action plugins' scripts are written


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def recipients_csv(value: Any) -> list[str]:
    return [p.strip() for p in str(value or "").split(",") if p.strip()]


class Performer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._kinds: dict[str, Callable[[Record, Record], Awaitable[Result]]] = {
            "email": self._email, "web_hook": self._web_hook, "run_event": self._run_event,
            "channel": self._channel, "suspend": self._suspend, "disable": self._disable, "delete": self._delete,
            "tag": self._tag, "label": self._label, "plugin": self._plugin,
            finishing.SERVER_DATA: self._server_data, finishing.EVENT_CHANGE: self._event_change,
            finishing.CLEAR_ALERT: self._clear_alert, "snapshot": self._snapshot,
            "ticket": self._ticket,
            "store": self._store, "fetch": self._fetch,
        }  # fmt: skip

    async def _job(self, job_id: str) -> Record | None:
        live = self.ctx.dispatcher.live(job_id)
        if live is not None:
            return copy.deepcopy(live)
        return await self.ctx.node.stores.jobs.get(job_id)

    async def perform(self, run: Record) -> Result:
        action: Mapping[str, Any] = run["action"] if isinstance(run.get("action"), Mapping) else {}
        kind = str(action.get("type", ""))
        started = time.monotonic()
        job = await self._job(str(run.get("job")))
        if job is None:
            return Outcome(code="job", description="The job is gone."), None
        if kind.startswith("_") and run.get("kind") != "internal":
            return Outcome(code="type", description=f"Unknown action type: {kind}"), None  # never from a job
        handler = self._kinds.get(kind)
        if handler is None:
            return Outcome(code="type", description=f"Unknown action type: {kind}"), None
        outcome, change = await handler(run, job)
        if not outcome.elapsed_ms:
            outcome.elapsed_ms = _ms(started)
        return outcome, change

    # -- data the messages render -------------------------------------------------------------
    async def _event(self, job: Mapping[str, Any]) -> Record | None:
        return await self.ctx.node.stores.defs.get(EVENTS, str(job.get("event") or ""))

    async def _data(self, run: Mapping[str, Any], job: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        """The keyword arguments of the message builders: the job's event, category, plugin and server."""
        defs, stores = self.ctx.node.stores.defs, self.ctx.node.stores
        server = await stores.servers.get(str(job["server"])) if job.get("server") else None
        return {"event": await self._event(job), "base_url": self.ctx.base_url, "secret_key": stores.secret_key,
                "action": run.get("action"), "condition": str(run.get("condition", "")),
                "category": await defs.get(CATEGORIES, str(job.get("category") or "")),
                "plugin": await defs.get(PLUGINS, str(job.get("plugin") or "")), "server": server, **extra}  # fmt: skip

    async def _hook_data(self, run: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
        kw = await self._data(run, job, text=str((run.get("action") or {}).get("text") or ""))
        return job_hook_data(job, kw.pop("event"), **kw)

    async def _emails_of(self, usernames: Any) -> list[str]:
        out: list[str] = []
        for name in usernames if isinstance(usernames, list) else []:
            user = await self.ctx.node.stores.users.get(str(name))
            if user and user.get("email"):
                out.append(str(user["email"]))
        return out

    # -- outside world ----------------------------------------------------------------------
    async def _email(self, run: Record, job: Record) -> Result:
        action = run["action"]
        to = list(dict.fromkeys([*await self._emails_of(action.get("users")), *recipients_csv(action.get("email"))]))
        if not to:
            return Outcome(description="No recipients for email (skipping)."), None
        kw = await self._data(run, job, text=str(action.get("text") or ""))
        data = job_email_data(job, kw.pop("event"), **kw)
        template = email_template(job, str(run.get("condition", "")), str(action.get("template") or ""))
        return await send_email(self.ctx.smtp, to=to, template=template, data=data), None

    async def _web_hook(self, run: Record, job: Record) -> Result:
        action = run["action"]
        hook, refused = await self._usable(WEB_HOOKS, "webhook", "Web Hook", str(action.get("web_hook") or ""))
        if hook is None:
            return refused, None
        return await run_web_hook(hook, await self._hook_data(run, job), self.ctx.session), None

    async def _usable(self, family: Family, code: str, label: str, obj_id: str) -> tuple[Record | None, Outcome]:
        """A web hook or channel an action names, if it exists, is enabled and is under its `max_per_day` (this
        use counted); else None and the Outcome that says why."""
        found = await self.ctx.node.stores.defs.get(family, obj_id)
        if found is None:
            return None, Outcome(code=code, description=f"{label} not found: {obj_id}")
        if not found.get("enabled", True):
            return None, Outcome(code=code, description=f"{label} is disabled: {obj_id}")
        cap = int(found.get("max_per_day") or 0)
        if cap and await self.ctx.node.stores.actions.count_today(family.name, obj_id, time.time()) > cap:
            why = f"{label} has reached maximum daily limit: {obj_id} ({cap}/day)"
            return None, Outcome(code=code, description=why)
        return found, Outcome()

    async def _plugin(self, run: Record, job: Record) -> Result:
        action = run["action"]
        plugin_id = str(action.get("plugin_id") or "")
        plugin = await self.ctx.node.stores.defs.get(PLUGINS, plugin_id)
        if plugin is None or plugin.get("type") != "action":
            return Outcome(code="plugin", description=f"Plugin not found: {plugin_id}"), None
        if not plugin.get("enabled", True):
            return Outcome(code="plugin", description=f"Plugin is disabled: {plugin_id}"), None
        data = await self._hook_data(run, job)
        payload = {**data, "xy": 1, "type": "action", "condition": run.get("condition"), "base_url": self.ctx.base_url}
        params = action.get("params") if isinstance(action.get("params"), Mapping) else {}
        return await run_action_plugin(plugin, params=params, payload=payload, base_url=self.ctx.local_url,
                                       scripts_dir=self.ctx.plugin_dir), None  # fmt: skip

    async def _channel(self, run: Record, job: Record) -> Result:
        async def as_result(kind: str, sub: Record) -> Result:
            handler = {"email": self._email, "web_hook": self._web_hook, "run_event": self._run_event}[kind]
            return await handler(sub, job)

        return await self.notify_channel(run, as_result)

    async def notify_channel(self, run: Record, send: Callable[[str, Record], Awaitable[Result]]) -> Result:
        """A `channel` action (job or alert): its users' and its own email, its web hook and its event, at once,
        each through `send(type, run of that type)`; the result names each part, the first failure wins."""
        action = run["action"]
        channel_id = str(action.get("channel_id") or "")
        channel, refused = await self._usable(CHANNELS, "channel", "Notification Channel", channel_id)
        if channel is None:
            return refused, None
        parts: list[tuple[str, Awaitable[Result]]] = []
        if channel.get("users") or channel.get("email"):
            sub = {**run, "action": {**action, "type": "email", "users": channel.get("users") or [],
                                     "email": channel.get("email") or ""}}  # fmt: skip
            parts.append(("Email", send("email", sub)))
        if channel.get("web_hook"):
            parts.append(("Web Hook", send("web_hook", {**run, "action": {**action, "web_hook": channel["web_hook"]}})))
        if channel.get("run_event"):
            parts.append(("Event", send("run_event", {**run, "action": {"type": "run_event",
                                                                         "event_id": channel["run_event"]}})))
        results = await asyncio.gather(*(p for _, p in parts))
        outcome = Outcome(description=f"Successfully notified channel: {channel.get('title') or channel_id}")
        changes: list[Change] = []
        sections: list[str] = []
        for (title, _), (sub_outcome, change) in zip(parts, results, strict=True):
            sections.append(f"### {title} Details:\n\n**Result:** {sub_outcome.description}\n\n{sub_outcome.details}")
            if sub_outcome.code:
                outcome.code, outcome.description = sub_outcome.code, sub_outcome.description
            if change is not None:
                changes.append(change)
        outcome.details = "\n".join(sections)

        def apply_all(target: Record) -> None:
            for change in changes:
                change(target)

        return outcome, apply_all if changes else None

    # -- jobs and events --------------------------------------------------------------------
    async def _run_event(self, run: Record, job: Record) -> Result:
        action = run["action"]
        event_id = str(action.get("event_id") or "")
        target = await self.ctx.node.stores.defs.get(EVENTS, event_id)
        if target is None:
            return Outcome(code="event", description=f"Event not found: {event_id}"), None
        if not any(t.get("type") == "manual" and t.get("enabled") for t in target.get("triggers") or []):
            return Outcome(code="event", description=f"Event does not allow manual job runs: {event_id}"), None
        given = action.get("params") if isinstance(action.get("params"), Mapping) else {}
        fields = {str(f.get("id")) for f in target.get("fields") or [] if isinstance(f, Mapping)}
        params = {k: v for k, v in given.items() if k in fields}  # as xyOps: only the event's own fields
        extra: Record = {"parent": {"job": job["id"], "event": job.get("event"), "code": job.get("code", 0),
                                    "description": job.get("description", "")}}  # fmt: skip
        if job.get("tickets"):
            extra["tickets"] = list(job["tickets"])
        launch = Launch(event=target, source="action", params=dict(params),
                        input={"data": job.get("data") or {}, "files": job.get("files") or []},
                        start_delay=int(action.get("start_delay") or 0), extra=extra,
                        claim=(f"{event_id}:run:{run['id']}", 0))  # fmt: skip
        try:
            launched = await launch_job(self.ctx.node, launch)
        except LaunchError as exc:
            return Outcome(code="event", description=f"Failed to launch event: {exc}"), None
        if launched is None:  # launched already, by a predecessor that claimed this run and died
            return Outcome(description="The job of this action was launched already."), None
        new_id = str(launched["id"])

        def link(target_job: Record) -> None:
            target_job["jobs"] = [*(target_job.get("jobs") or []), {"id": new_id, "reason": "action"}]

        return Outcome(description=f"Successfully launched job: {new_id}"), link

    async def _suspend(self, run: Record, job: Record) -> Result:
        """The job was suspended when it was placed (finish.holds), in the same write; this tells people."""
        action = run["action"]
        if not finishing.holds(job, action):
            return Outcome(description=f"Skipped suspension due to job source: {job.get('source')}"), None
        if run.get("condition") != "start":
            # ⚠ xyOps also holds a job suspended at completion, in its memory; here a job that ran is over.
            return Outcome(description="Skipped: a job is suspended before it launches only (start actions)."), None
        notices: list[Awaitable[Result]] = []
        if action.get("users") or action.get("email"):
            notices.append(self._email({**run, "action": {**action, "template": "job_suspended"}}, job))
        if action.get("web_hook"):
            notices.append(self._web_hook({**run, "action": {**action, "template": "job_suspended"}}, job))
        results = await asyncio.gather(*notices)
        details = "\n".join(f"- {o.description}" for o, _ in results)  # their failures never undo the suspension
        return Outcome(description="Job suspended until someone resumes it.", details=details), None

    async def _set_event(self, event_id: str, update: Mapping[str, Any] | None) -> str:
        """Change (or with None, delete) an event as the primary; '' when done, else why not."""
        defs = self.ctx.node.stores.defs
        for _ in range(5):
            current = await defs.get(EVENTS, event_id)
            if current is None:
                return f"Event not found: {event_id}"
            try:
                if update is None:
                    await defs.delete(self.ctx.node.fence(), EVENTS, event_id)
                else:
                    record = {**copy.deepcopy(current), **update, "id": current["id"], "modified": int(time.time()),
                              "revision": int(current.get("revision") or 0) + 1}  # fmt: skip
                    await defs.replace(self.ctx.node.fence(), EVENTS, record, current.get("revision"))
                return ""
            except Conflict as exc:
                if exc.reason != "revision":
                    return f"Event not found: {event_id}"
        return f"Event {event_id} kept changing; not updated."

    async def _disable(self, run: Record, job: Record) -> Result:
        problem = await self._set_event(str(job.get("event")), {"enabled": False})
        return (Outcome(code="event", description=problem) if problem
                else Outcome(description="Successfully disabled event.")), None  # fmt: skip

    async def _delete(self, run: Record, job: Record) -> Result:
        problem = await self._set_event(str(job.get("event")), None)
        return (Outcome(code="event", description=problem) if problem
                else Outcome(description="Successfully deleted event.")), None  # fmt: skip

    async def _event_change(self, run: Record, job: Record) -> Result:
        """What a finished job asked of its own event (finish.event_change decided what is allowed)."""
        action = run["action"]
        update = action.get("update") if isinstance(action.get("update"), Mapping) else {}
        problem = await self._set_event(str(job.get("event")), None if action.get("delete") else update)
        if problem:
            return Outcome(code="event", description=problem), None
        what = "Deleted the event, as the job asked." if action.get("delete") else \
            f"Updated the event ({', '.join(sorted(update))}), as the job asked."  # fmt: skip
        return Outcome(description=what), None

    async def _tag(self, run: Record, job: Record) -> Result:
        tags = [str(t)[:64] for t in run["action"].get("tags") or []][:100]

        def add(target: Record) -> None:
            target["tags"] = list(dict.fromkeys([*(target.get("tags") or []), *tags]))

        return Outcome(description=f"Successfully added tags: {', '.join(tags)}"), add

    async def _label(self, run: Record, job: Record) -> Result:
        data = await self._hook_data(run, job)
        try:
            label = templates.render(str(run["action"].get("label", "")), data)
        except ValueError as exc:
            return Outcome(code="label", description=f"Label does not render: {exc}"), None
        label = _TAGS.sub("", label)[:256]

        def apply(target: Record) -> None:
            target["label"] = label

        return Outcome(description=f"Successfully applied label: {label}"), apply

    async def _snapshot(self, run: Record, job: Record) -> Result:
        """A snapshot of the job's server, naming the job (xyOps runJobAction_snapshot)."""
        server_id = str(job.get("server") or "")
        if not server_id:
            return Outcome(code="snapshot", description="Failed to take snapshot: No server selected for job."), None
        try:
            # issue 11: the run's own id (a repeat after a failover finds its snapshot), one per server and sample
            snapshot_id = await take_server_snapshot(self.ctx.node, server_id, "job", {"job": str(job["id"])},
                                                     snapshot_id=run_snapshot_id(str(run["id"])), per_sample=True)
        except SnapshotError as exc:
            return Outcome(code="snapshot", description=f"Failed to take snapshot: {exc.message}"), None
        return Outcome(description=f"Successfully took snapshot of server: {server_id} ({snapshot_id})"), None

    async def _ticket(self, run: Record, job: Record) -> Result:
        """A ticket about the job (its body from the job's success or failure), listed in the job's `tickets`."""
        outcome, ticket_id = await make_ticket(self.ctx.node, run, base_url=self.ctx.base_url, job=job)
        if not ticket_id:
            return outcome, None

        def link(target_job: Record) -> None:
            tickets = [str(t) for t in target_job.get("tickets") or []]
            if ticket_id not in tickets:
                target_job["tickets"] = [*tickets, ticket_id]

        return outcome, link

    async def _store(self, run: Record, job: Record) -> Result:
        return await bucket.store(self.ctx.node, run, job)

    async def _fetch(self, run: Record, job: Record) -> Result:
        return await bucket.fetch(self.ctx.node, run, job)

    async def _clear_alert(self, run: Record, job: Record) -> Result:
        """The job was launched by an alert with `clear_alert`: its end clears that alert (xyOps finishJob)."""
        inv_id = str(run["action"].get("invocation") or "")
        alerting = self.ctx.node.alerting
        if alerting is None or not await alerting.clear(inv_id):
            return Outcome(description=f"Alert {inv_id} was not active."), None
        return Outcome(description=f"Cleared alert {inv_id}."), None

    async def _server_data(self, run: Record, job: Record) -> Result:
        """A job's `serverData` joins its server's `userData` once it is complete (digest 3.2 finishJob)."""
        data, server_id = job.get("serverData"), str(job.get("server") or "")
        if not isinstance(data, Mapping) or not server_id:
            return Outcome(description="No server data."), None
        too_large = False

        async def merge(record: Record) -> Record | None:
            nonlocal too_large
            user: dict[str, Any] = record["userData"] if isinstance(record.get("userData"), dict) else {}
            merged = {**user, **data}
            if len(repr(merged)) > MAX_USER_DATA:
                too_large = True
                return None
            return {**record, "userData": merged}

        found = await self.ctx.node.stores.servers.modify(server_id, merge)
        if found is None:
            return Outcome(code="server", description=f"Server not found: {server_id}"), None
        if too_large:
            return Outcome(code="server", description="Server data would exceed 64 KB; not merged."), None
        return Outcome(description=f"Merged server data into {server_id}."), None
