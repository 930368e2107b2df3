"""Alert expressions and the warm-up/cool-down of an alert on one server (execution reference 2.4): pure.

Evaluation (on the node holding the agent's socket, after the monitors): each enabled alert in scope is
evaluated against the sample's data (which holds `monitors` and `deltas` by then); an error is false. A true
result carries the alert's `message` rendered against the same data; a false one carries None.

Advancing (on the primary, per server, one sample at a time): a true result creates the warm entry if needed
and counts up to `samples`; a false one counts down to 0. An entry that reaches `samples` fires once (it becomes
an invocation); a fired entry back at 0 clears. Entries at 0 are dropped.
⚠ xyOps keeps the entry of an alert that was disabled, deleted or moved out of the server's groups, and keeps
refreshing it, so such an invocation stays active for as long as the server reports. Here an entry whose alert
gave no result for this sample is dropped, and if it had fired it clears (silently, as a stale one does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster.expressions import Expression, ExpressionError, compile_expression, templates, truthy

from .values import in_scope

Record = dict[str, Any]
MESSAGE_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert definition, compiled."""

    id: str
    groups: tuple[str, ...]
    expression: Expression
    message: str
    samples: int

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Alert:
        samples = record.get("samples")
        return cls(
            id=str(record["id"]), groups=tuple(str(g) for g in record.get("groups") or ()),
            expression=compile_expression(str(record.get("expression") or "")),
            message=str(record.get("message") or ""),
            samples=max(1, int(samples)) if isinstance(samples, int | float) and not isinstance(samples, bool) else 1,
        )  # fmt: skip

    def check(self, data: Mapping[str, Any]) -> str | None:
        """The rendered message when the expression holds for `data`, else None."""
        try:
            if not truthy(self.expression.evaluate_raw(data)):
                return None
        except Exception:  # an ExpressionError, or any failure on odd data: false, as xyOps
            return None
        try:
            return templates.render(self.message, data)[:MESSAGE_CHARS]
        except Exception:
            return self.message[:MESSAGE_CHARS]


def compile_alerts(records: Sequence[Mapping[str, Any]]) -> list[Alert]:
    """The enabled stored alerts, compiled (one that no longer compiles is left out)."""
    out = []
    for record in records:
        if not record.get("enabled", True):
            continue
        try:
            out.append(Alert.of(record))
        except (ExpressionError, KeyError, ValueError):
            continue
    return out


def evaluate(alerts: Sequence[Alert], data: Mapping[str, Any], server_groups: Sequence[str]) -> dict[str, str | None]:
    """alert id -> message (true) or None (false), for every enabled alert in the server's scope."""
    return {a.id: a.check(data) for a in alerts if in_scope(a.groups, server_groups)}


@dataclass(slots=True)
class Advance:
    """What one sample did to a server's warm entries."""

    warm: dict[str, Record]  # alert id -> entry, after the sample
    fired: list[Record] = field(default_factory=list)  # entries that reached `samples` now (notified: True)
    cleared: list[Record] = field(default_factory=list)  # fired entries back at 0 (or whose alert is gone)
    silent: list[Record] = field(default_factory=list)  # of `cleared`, those to clear without notifications


def advance(
    warm: Mapping[str, Record], results: Mapping[str, str | None], samples: Mapping[str, int], server: str,
    now: float, new_id: Callable[[], str],
) -> Advance:  # fmt: skip
    """Apply one sample's results (alert id -> message or None) to a server's warm entries. `samples` gives
    each alert's `samples` (an alert missing there is gone: its entry is dropped)."""
    out = Advance(warm={})
    for alert_id, message in results.items():
        if alert_id not in samples:
            continue
        entry = dict(warm[alert_id]) if alert_id in warm else None
        if message is not None:
            if entry is None:
                entry = {"id": new_id(), "alert": alert_id, "server": server, "date": now, "message": "", "count": 0,
                         "modified": now, "notified": False}  # fmt: skip
            entry["message"] = message
            entry["count"] = min(int(entry.get("count") or 0) + 1, samples[alert_id])
        elif entry is not None:
            entry["count"] = max(int(entry.get("count") or 0) - 1, 0)
        if entry is None:
            continue
        entry["modified"] = now
        count = entry["count"]
        if count >= samples[alert_id] and not entry.get("notified"):
            entry["notified"] = True
            out.fired.append(entry)
        elif count == 0 and entry.get("notified"):
            out.cleared.append(entry)
        if count > 0:
            out.warm[alert_id] = entry
    for alert_id, entry in warm.items():
        gone = alert_id not in results or alert_id not in samples  # disabled, deleted or out of scope now
        if gone and entry.get("notified"):
            out.cleared.append(dict(entry))
            out.silent.append(out.cleared[-1])
    return out
