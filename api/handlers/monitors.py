"""Monitors (digest 3.4): definitions, tests against a server's last sample, and the monitoring data reads.

Every read comes from Redis (storage/hostdata.py, storage/timeseries.py), so every node answers it. Monitors are
not group-limited objects, and group-limited users may not manage them (as xyOps).
"""

from __future__ import annotations

from typing import Any

from cluster.expressions import ExpressionError, compile_expression
from cluster.monitoring.values import DATA_TYPES, cast, extract
from cluster.patterns import PatternError, TextTooLong, compile_user
from storage.families import GROUPS, MONITORS
from storage.timeseries import SYSTEMS

from ..call import Call
from ..definitions import FamilySpec, Field, register_family
from ..errors import ApiError, bad_param
from ..params import integer, number, text
from ..principal import require_unrestricted
from ..registry import AUTH, HANDLERS, Reply
from .servers import SERVER_ID, server_visible

EXPRESSION_LEN = 4096
# Time series items in one read (xyOps: no bound): a reply under a MB, decoded and encoded in a few ms (the store
# allows more, for its own readers); a longer span is read in pages by `date`.
MAX_ROWS = 1000  # the page bound every handler keeps
MAX_DATE = 253_402_300_799.0  # 9999-12-31 (epoch s): far past any sample, and an offset the store can take


def check_source(source: Any, field: str = "source", code: str = "monitor") -> None:
    try:
        compile_expression(str(source or ""))
    except ExpressionError as exc:
        raise ApiError(code, f"Failed to compile expression: {field}: {exc}") from None


def check_match(pattern: Any, field: str = "data_match") -> None:
    if pattern:
        try:
            compile_user(str(pattern), field)
        except PatternError as exc:
            raise bad_param(exc.field, exc.problem) from None


async def _check(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    require_unrestricted(call.who)
    if record.get("data_type") not in DATA_TYPES:
        raise bad_param("data_type", f"must be one of {', '.join(sorted(DATA_TYPES))}")
    check_source(record.get("source"))
    check_match(record.get("data_match"))
    minimum = record.get("delta_min_value")
    if minimum not in (None, False, "") and (isinstance(minimum, bool) or not isinstance(minimum, int | float)):
        raise bad_param("delta_min_value", "must be a number or false")
    await check_groups(call, record)


async def check_groups(call: Call, record: dict[str, Any]) -> None:
    """A monitor's or alert's `groups` name groups that exist."""
    known = {str(g.get("id")) for g in await call.stores.defs.all(GROUPS)}
    unknown = [g for g in record.get("groups") or [] if g not in known]
    if unknown:
        raise bad_param("groups", f"names unknown group(s): {', '.join(unknown[:5])[:200]}")


async def unrestricted_only(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    """Group-limited users may not manage monitors or alerts (as xyOps)."""
    require_unrestricted(call.who)


MONITOR_SPEC = FamilySpec(
    family=MONITORS,
    singular="monitor",
    plural="monitors",
    prefix="m",
    create="create_monitors",
    edit="edit_monitors",
    delete="delete_monitors",
    multi=True,
    ordered=True,
    fields=(
        Field("title", "title", required=True),
        Field("source", "text", required=True, max_len=EXPRESSION_LEN),
        Field("data_type", "text", required=True, max_len=16),
        Field("data_match", "text", max_len=1000),
        Field("display", "bool", default=True),
        Field("icon", "icon", default=""),
        Field("groups", "strings", default=[]),
        Field("min_vert_scale", "number"),
        Field("suffix", "text", max_len=32),
        Field("delta", "bool"),
        Field("divide_by_delta", "bool"),
        Field("delta_min_value", "any", max_bytes=64),
        Field("notes", "text"),
        Field("sort_order", "int"),
    ),
    before_create=_check,
    before_update=_check,
    before_delete=unrestricted_only,
)

monitors = register_family(MONITOR_SPEC)


async def host_record(call: Call, server_id: str) -> dict[str, Any]:
    """A server's last sample, if the caller may see the server (notfound / access otherwise)."""
    server = await call.stores.servers.get(server_id)
    if server is None:
        raise ApiError("notfound", f"Failed to locate server: {server_id}")
    if not server_visible(call.who, server):
        raise ApiError("access", f"You do not have the required account privileges to access server ID {server_id}.")
    found = await call.stores.hosts.get(server_id)
    if found is None:
        raise ApiError("monitor", f"No monitoring data yet for server: {server_id}")
    return found


@HANDLERS.add("test_monitor", write=True, privilege="edit_monitors",
              args=(SERVER_ID.with_(name="server"), text("source", required=True, max_len=EXPRESSION_LEN),
                    text("data_type", required=True, max_len=16), text("data_match", max_len=1000)))  # fmt: skip
async def test_monitor(call: Call) -> Reply:
    """A monitor's value for the server's last sample; `fail: true` when the source gives nothing."""
    require_unrestricted(call.who)
    p = call.params
    check_source(p["source"])
    check_match(p.get("data_match"))
    host = await host_record(call, p["server"])
    try:
        value = compile_expression(p["source"]).evaluate(host.get("data") or {})
    except ExpressionError:
        value = None
    if value is None:
        return {"fail": True}
    if p.get("data_match"):
        pattern = compile_user(p["data_match"], "data_match")
        try:
            matched = pattern.groups(str(value))
        except TextTooLong as exc:  # a value of more than 64 KB: refused, as the intake refuses it
            raise ApiError("monitor", f"The value is too long to match data_match against: {exc}") from None
        if matched is None:
            raise ApiError("monitor", f"Custom data regular expression did not match: {p['data_match']}")
        value = extract(value, pattern)
    return {"value": cast(value, p["data_type"])}


SYS = text("sys", required=True, max_len=16, doc="hourly | daily | monthly | yearly")
LIMIT = integer("limit", 60, ge=1, le=MAX_ROWS, doc="items")


def _system(call: Call) -> str:
    sys = call.params["sys"]
    if sys not in SYSTEMS:
        raise ApiError("monitor", f"Unknown system: {sys} (one of {', '.join(SYSTEMS)})")
    return str(sys)


@HANDLERS.add("get_latest_monitor_data", write=False, privilege=AUTH, args=(SERVER_ID.with_(name="server"), SYS, LIMIT))
async def get_latest_monitor_data(call: Call) -> Reply:
    """The last `limit` time series items of a server in one system, and its last sample."""
    sys = _system(call)
    host = await host_record(call, call.params["server"])
    rows = await call.stores.timelines.latest(call.params["server"], sys, call.params["limit"])
    return {"rows": rows, "data": host}


@HANDLERS.add("get_historical_monitor_data", write=False, privilege=AUTH,
              args=(SERVER_ID.with_(name="server"), SYS,
                    number("date", ge=0, le=MAX_DATE, doc="epoch start (s)"), LIMIT))  # fmt: skip
async def get_historical_monitor_data(call: Call) -> Reply:
    """`limit` time series items of a server in one system from `date` on."""
    sys = _system(call)
    if call.params.get("date") is None:
        raise ApiError("api", "Missing parameter: date")
    await host_record(call, call.params["server"])
    rows = await call.stores.timelines.historical(call.params["server"], sys, call.params["date"], call.params["limit"])
    return {"rows": rows}


@HANDLERS.add("get_quickmon_data", write=False, privilege=AUTH,
              args=(SERVER_ID.with_(name="server", required=False), text("group", max_len=64)))  # fmt: skip
async def get_quickmon_data(call: Call) -> Reply:
    """The last minute of per-second samples of online servers (one, a group's, or all the caller sees)."""
    who, server_id, group = call.who, call.params.get("server"), call.params.get("group")
    if server_id:
        record = await call.stores.servers.get(server_id)
        online = await call.stores.servers.is_online(server_id)
        wanted = [server_id] if record is not None and online and server_visible(who, record) else []
    elif not group and (who.is_admin or not who.groups):  # every online server: the ids are enough
        wanted = await call.stores.servers.online_ids()
    else:
        records = await call.stores.servers.online()
        wanted = [sid for sid, rec in records.items() if server_visible(who, rec)
                  and (not group or group in (rec.get("groups") or []))]  # fmt: skip
    return {"servers": await call.stores.quickmon.get(wanted)}
