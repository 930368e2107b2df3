"""Roles (digest 3.12): named privilege sets with category/group limits, merged in on every request."""

from __future__ import annotations

from typing import Any

from storage.families import ROLES

from ..call import Call
from ..definitions import FamilySpec, Field, register_family
from ..errors import ApiError


async def _no_escalation(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    """A non-admin may not grant through a role what it does not hold itself (admin included), nor
    lift the category/group limits of a role (an empty list means unrestricted)."""
    who = call.who
    if who.is_admin:
        return
    granted = {k for k, v in (record.get("privileges") or {}).items() if v}
    beyond = sorted(granted - who.privileges)
    if beyond:
        raise ApiError("access", f"You cannot grant privileges you do not hold: {', '.join(beyond)}")
    for field, held in (("categories", who.categories), ("groups", who.groups)):
        wanted = set(record.get(field) or [])
        if held and (not wanted or not wanted <= held):
            raise ApiError("access", f"You cannot give a role wider {field} than your own.")

ROLE_SPEC = FamilySpec(
    family=ROLES,
    singular="role",
    plural="roles",
    prefix="r",
    create="create_roles",
    edit="edit_roles",
    delete="delete_roles",
    fields=(
        Field("title", "title", required=True),
        Field("enabled", "bool", default=True),
        Field("icon", "icon"),
        Field("privileges", "privileges", default={}),
        Field("categories", "strings", default=[]),
        Field("groups", "strings", default=[]),
        Field("notes", "text"),
    ),
    before_create=_no_escalation,
    before_update=_no_escalation,
)

roles = register_family(ROLE_SPEC)
