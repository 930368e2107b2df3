"""What each action of an alert invocation does (xyOps lib/alert.js runAlertAction_*), given a claimed run.

The run names the invocation, its condition (`alert_new` or `alert_cleared`) and the action. The data every
message renders (AlertHookData: hookdata.alert_context) is built from the invocation, its alert definition, the
server's last sample and the server record. Email, web hook, channel and plugin go through the same senders as
job actions; `run_event` launches a job with `source: alert` (on the alert's server with `target_server`, clearing
the alert when it completes with `clear_alert`); `snapshot` takes one of the alert's server (source `alert`, naming
the invocation); `ticket` opens a ticket about the invocation and lists it in the invocation's `tickets`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from storage.families import ALERTS, EVENTS, GROUPS, PLUGINS, WEB_HOOKS

from ..launcher import Launch, LaunchError, launch_job
from ..monitoring.snapshots import SnapshotError, run_snapshot_id, take_server_snapshot
from .email import send_email
from .hookdata import alert_context
from .perform import Context, Performer, recipients_csv
from .plugin import run_action_plugin
from .result import Outcome
from .ticket import make_ticket
from .webhook import run_web_hook

Record = dict[str, Any]
ABORT_JOBS = "_abort_jobs"


class AlertPerformer(Performer):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._alert_kinds: dict[str, Callable[[Record, Record], Awaitable[Outcome]]] = {
            "email": self._alert_email, "web_hook": self._alert_web_hook, "channel": self._alert_channel,
            "run_event": self._alert_run_event, "plugin": self._alert_plugin,
        }  # fmt: skip

    async def perform_alert(self, run: Record) -> Outcome:
        action: Mapping[str, Any] = run["action"] if isinstance(run.get("action"), Mapping) else {}
        kind = str(action.get("type", ""))
        started = time.monotonic()
        if kind == ABORT_JOBS and run.get("kind") == "alert_internal":
            return await self._abort_jobs(run)
        if kind == "ticket":
            outcome, _ = await make_ticket(self.ctx.node, run, base_url=self.ctx.base_url,
                                           invocation=await self._invocation(run))  # fmt: skip
            outcome.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
            return outcome
        if kind == "snapshot":  # needs none of the message data
            outcome = await self._alert_snapshot(run)
            outcome.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
            return outcome
        handler = self._alert_kinds.get(kind)
        if handler is None:
            return Outcome(code="type", description=f"Unknown alert action type: {kind}")
        data = await self._alert_data(run, str(action.get("text") or ""))
        outcome = await handler(run, data)
        if not outcome.elapsed_ms:
            outcome.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        return outcome

    async def _invocation(self, run: Mapping[str, Any]) -> Record:
        """The run's invocation as stored, or what the run knows of it."""
        stored = await self.ctx.node.stores.alerts.get(str(run.get("invocation")))
        return stored or {"id": run.get("invocation"), "alert": run.get("alert"), "server": run.get("server")}

    async def _alert_data(self, run: Mapping[str, Any], text: str = "") -> dict[str, Any]:
        stores = self.ctx.node.stores
        invocation = await self._invocation(run)
        condition = str(run.get("condition") or "alert_new")
        if condition == "alert_cleared":  # the record may still be active: its clear is written after the batch
            invocation = {**invocation, "active": False}
        server_id = str(run.get("server") or invocation.get("server") or "")
        titles = {str(g["id"]): str(g.get("title") or g["id"]) for g in await stores.defs.all(GROUPS)}
        elapsed = run.get("elapsed")
        return alert_context(invocation, await stores.defs.get(ALERTS, str(run.get("alert"))),
                             await stores.hosts.get(server_id), await stores.servers.get(server_id),
                             condition=condition, base_url=self.ctx.base_url, group_titles=titles,
                             elapsed=float(elapsed) if isinstance(elapsed, int | float) else None,
                             text=text)  # fmt: skip

    async def _alert_email(self, run: Record, data: Record) -> Outcome:
        action = run["action"]
        to = list(dict.fromkeys([*await self._emails_of(action.get("users")), *recipients_csv(action.get("email"))]))
        if not to:
            return Outcome(description="No recipients for email (skipping).")
        template = str(run.get("condition") or "alert_new")
        return await send_email(self.ctx.smtp, to=to, template=template, data=data)

    async def _alert_web_hook(self, run: Record, data: Record) -> Outcome:
        hook, refused = await self._usable(WEB_HOOKS, "webhook", "Web Hook", str(run["action"].get("web_hook") or ""))
        if hook is None:
            return refused
        return await run_web_hook(hook, data, self.ctx.session)

    async def _alert_plugin(self, run: Record, data: Record) -> Outcome:
        action = run["action"]
        plugin_id = str(action.get("plugin_id") or "")
        plugin = await self.ctx.node.stores.defs.get(PLUGINS, plugin_id)
        if plugin is None or plugin.get("type") != "action":
            return Outcome(code="plugin", description=f"Plugin not found: {plugin_id}")
        if not plugin.get("enabled", True):
            return Outcome(code="plugin", description=f"Plugin is disabled: {plugin_id}")
        payload = {**data, "xy": 1, "type": "action", "condition": run.get("condition"), "base_url": self.ctx.base_url}
        params = action.get("params") if isinstance(action.get("params"), Mapping) else {}
        return await run_action_plugin(plugin, params=params, payload=payload, base_url=self.ctx.local_url,
                                       scripts_dir=self.ctx.plugin_dir)  # fmt: skip

    async def _alert_channel(self, run: Record, data: Record) -> Outcome:
        senders = {"email": self._alert_email, "web_hook": self._alert_web_hook, "run_event": self._alert_run_event}

        async def as_result(kind: str, sub: Record) -> tuple[Outcome, None]:
            return await senders[kind](sub, data), None

        outcome, _ = await self.notify_channel(run, as_result)
        return outcome

    async def _alert_run_event(self, run: Record, data: Record) -> Outcome:
        action = run["action"]
        event_id = str(action.get("event_id") or "")
        target = await self.ctx.node.stores.defs.get(EVENTS, event_id)
        if target is None:
            return Outcome(code="event", description=f"Event not found: {event_id}")
        if not any(t.get("type") == "manual" and t.get("enabled") for t in target.get("triggers") or []):
            return Outcome(code="event", description=f"Event does not allow manual job runs: {event_id}")
        given = action.get("params") if isinstance(action.get("params"), Mapping) else {}
        fields = {str(f.get("id")) for f in target.get("fields") or [] if isinstance(f, Mapping)}
        invocation = data.get("alert") or {}
        definition = data.get("def") or {}
        extra: Record = {}
        if action.get("target_server") and not target.get("workflow"):
            extra["targets"] = [str(run.get("server"))]
        if action.get("clear_alert"):
            extra["clear_alert"] = str(run.get("invocation"))
        launch = Launch(event=target, source="alert", params={k: v for k, v in given.items() if k in fields},
                        input={"data": {"condition": run.get("condition"),
                                        "alert": {**invocation, "title": definition.get("title", "")}}, "files": []},
                        start_delay=int(action.get("start_delay") or 0), extra=extra,
                        claim=(f"{event_id}:run:{run['id']}", 0))  # fmt: skip
        try:
            launched = await launch_job(self.ctx.node, launch)
        except LaunchError as exc:
            return Outcome(code="event", description=f"Failed to launch event: {exc}")
        if launched is None:
            return Outcome(description="The job of this action was launched already.")
        return Outcome(description=f"Successfully launched job: {launched['id']}")

    async def _alert_snapshot(self, run: Record) -> Outcome:
        """A snapshot of the alert's server (xyOps runAlertAction_snapshot), naming the invocation."""
        server_id = str(run.get("server") or "")
        try:
            # issue 11: the run's own id (a repeat after a failover finds its snapshot), one per server and sample
            snapshot_id = await take_server_snapshot(self.ctx.node, server_id, "alert",
                                                     {"alert": str(run.get("invocation") or "")},
                                                     snapshot_id=run_snapshot_id(str(run["id"])),
                                                     per_sample=True)  # fmt: skip
        except SnapshotError as exc:
            return Outcome(code="snapshot", description=f"Failed to take snapshot: {exc.message}")
        return Outcome(description=f"Successfully took snapshot of server: {server_id} ({snapshot_id})")

    async def _abort_jobs(self, run: Record) -> Outcome:
        """An alert with `abort_jobs` fired: every active job on its server is aborted."""
        server = str(run.get("server") or "")
        definition = await self.ctx.node.stores.defs.get(ALERTS, str(run.get("alert"))) or {}
        reason = f"Alert Fired: {definition.get('title') or run.get('alert')}"
        dispatcher = self.ctx.dispatcher
        ids = [str(j["id"]) for j in list(dispatcher.jobs.values())
               if j.get("server") == server and j.get("state") in ("active", "starting")]  # fmt: skip
        for job_id in ids:
            await dispatcher.abort(job_id, reason)
        return Outcome(description=f"Aborted {len(ids)} job(s) on server {server}.")
