"""Alert definitions (digest 3.5): expressions over each minute sample, the message they render, their actions.

Evaluation and invocations live in cluster/monitoring/; the invocation reads and searches in alertinvocations.py.
Alerts are not group-limited objects, and group-limited users may not manage them (as xyOps).
"""

from __future__ import annotations

from typing import Any

from cluster.expressions import ExpressionError, compile_expression, templates, truthy
from storage.families import ALERTS, MONITORS

from ..actions import validate_actions
from ..call import Call
from ..definitions import FamilySpec, Field, register_family
from ..errors import ApiError, bad_param
from ..params import text
from ..principal import require_unrestricted
from ..registry import HANDLERS, Reply
from .monitors import EXPRESSION_LEN, check_groups, check_source, host_record, unrestricted_only
from .servers import SERVER_ID

ALERT_CONDITIONS = frozenset({"alert_new", "alert_cleared"})
MESSAGE_LEN = 4096
MAX_SAMPLES = 1440  # a day of minutes


def check_message(message: Any) -> None:
    try:
        templates.check(str(message or ""))
    except ValueError as exc:
        raise bad_param("message", f"has a placeholder that does not compile: {exc}") from None


async def _check(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    require_unrestricted(call.who)
    check_source(record.get("expression"), "expression", code="alert")
    check_message(record.get("message"))
    samples = record.get("samples", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise bad_param("samples", f"must be a whole number from 1 to {MAX_SAMPLES}")
    record["actions"] = await validate_actions(call.stores, record.get("actions"))
    for i, action in enumerate(record["actions"]):
        if action.get("condition") not in ALERT_CONDITIONS:
            raise ApiError("api", f"actions[{i}]: an alert action's condition is alert_new or alert_cleared")
    await check_groups(call, record)
    monitor_id = record.get("monitor_id")
    if monitor_id and await call.stores.defs.get(MONITORS, str(monitor_id)) is None:
        raise bad_param("monitor_id", f"refers to an unknown monitor: {monitor_id}")


ALERT_SPEC = FamilySpec(
    family=ALERTS,
    singular="alert",
    plural="alerts",
    prefix="a",
    create="create_alerts",
    edit="edit_alerts",
    delete="delete_alerts",
    fields=(
        Field("title", "title", required=True),
        Field("enabled", "bool", default=True),
        Field("icon", "icon", default=""),
        Field("expression", "text", required=True, max_len=EXPRESSION_LEN),
        Field("message", "text", required=True, max_len=MESSAGE_LEN),
        Field("groups", "strings", default=[]),
        Field("actions", "any", default=[]),
        Field("monitor_id", "text", max_len=64),
        Field("samples", "int", default=1),
        Field("exclusive_actions", "bool", default=False),
        Field("limit_jobs", "bool", default=False),
        Field("abort_jobs", "bool", default=False),
        Field("notes", "text"),
    ),
    before_create=_check,
    before_update=_check,
    before_delete=unrestricted_only,
)

alerts = register_family(ALERT_SPEC)


@HANDLERS.add("test_alert", write=True, privilege="edit_alerts",
              args=(SERVER_ID.with_(name="server"), text("expression", required=True, max_len=EXPRESSION_LEN),
                    text("message", required=True, max_len=MESSAGE_LEN)))  # fmt: skip
async def test_alert(call: Call) -> Reply:
    """An alert expression and message against the server's last sample (with its monitors and deltas)."""
    require_unrestricted(call.who)
    p = call.params
    check_source(p["expression"], "expression", code="alert")
    check_message(p["message"])
    data = (await host_record(call, p["server"])).get("data") or {}
    try:
        result = truthy(compile_expression(p["expression"]).evaluate_raw(data))
    except ExpressionError:
        result = False
    try:
        message = templates.render(p["message"], data)
    except ValueError as exc:  # over the evaluation or output bounds
        raise ApiError("alert", f"The message does not render: {exc}") from None
    return {"result": result, "message": message}
