"""Server groups (digest 3.9): hostname patterns that place agents; group-limited users see only theirs."""

from __future__ import annotations

from typing import Any

from cluster.patterns import PatternError, compile_user
from cluster.server_groups import regroup_servers
from storage.families import GROUPS

from ..actions import validate_actions
from ..call import Call
from ..definitions import FamilySpec, Field, register_family
from ..errors import bad_param
from ..principal import can_group


async def _check(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    # xyOps compiles the pattern with JavaScript's RegExp; the server registry matches host names with
    # cluster.patterns.hostname_matches, which runs what this accepts in bounded time.
    try:
        compile_user(str(record.get("hostname_match", "")), "hostname_match")
    except PatternError as exc:
        raise bad_param(exc.field, exc.problem) from None
    record["alert_actions"] = await validate_actions(call.stores, record.get("alert_actions"), "alert_actions")


async def _written(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    """Stored servers follow a new group or a new hostname_match (other edits move nothing)."""
    if current is None or current.get("hostname_match") != record.get("hostname_match"):
        await regroup_servers(call.stores)


async def _deleted(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    """Servers leave a deleted group (one left with no manual group goes back to automatic groups)."""
    await regroup_servers(call.stores)


GROUP_SPEC = FamilySpec(
    family=GROUPS,
    singular="group",
    plural="groups",
    prefix="g",
    create="create_groups",
    edit="edit_groups",
    delete="delete_groups",
    access=lambda who, rec: can_group(who, str(rec.get("id"))),
    multi=True,
    ordered=True,
    fields=(
        Field("title", "title", required=True),
        Field("hostname_match", "text", required=True, max_len=1024),
        Field("icon", "icon", default=""),
        Field("notes", "text"),
        Field("alert_actions", "any", default=[]),
        Field("max_jobs_per_server", "int"),
        Field("sort_order", "int"),
    ),
    before_create=_check,
    before_update=_check,
    after_write=_written,
    after_delete=_deleted,
)

groups = register_family(GROUP_SPEC)
