"""Who is calling, with effective privileges, and the one set of privilege checks every handler uses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError


@dataclass(frozen=True, slots=True)
class Principal:
    """A user (via session) or an API key, with roles already merged in."""

    kind: str  # "user" | "key"
    id: str  # username, or API key id
    record: Mapping[str, Any]  # the stored user (never returned as is) or API key record
    privileges: frozenset[str]
    categories: frozenset[str]  # empty = unrestricted
    groups: frozenset[str]  # empty = unrestricted
    session_id: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.privileges

    @property
    def username(self) -> str:
        """What activity records name: the username, or the key id (as xyOps does)."""
        return self.id


def _truthy_keys(privileges: Any) -> set[str]:
    if isinstance(privileges, Mapping):
        return {str(k) for k, v in privileges.items() if v}
    return set()


def effective(
    kind: str, obj_id: str, record: Mapping[str, Any], roles: Mapping[str, Mapping[str, Any]], session_id: str = ""
) -> Principal:
    """Own privileges plus those of each enabled role; category/group limits unioned likewise."""
    privs = _truthy_keys(record.get("privileges"))
    cats = {str(c) for c in record.get("categories") or []}
    groups = {str(g) for g in record.get("groups") or []}
    for role_id in record.get("roles") or []:
        role = roles.get(str(role_id))
        if role is None or not role.get("enabled", True):
            continue
        privs |= _truthy_keys(role.get("privileges"))
        cats |= {str(c) for c in role.get("categories") or []}
        groups |= {str(g) for g in role.get("groups") or []}
    if "admin" in privs:  # admins are never restricted
        cats, groups = set(), set()
    return Principal(kind, obj_id, record, frozenset(privs), frozenset(cats), frozenset(groups), session_id)


def require_privilege(who: Principal, privilege: str) -> None:
    if who.is_admin:
        return
    if privilege not in who.privileges:
        raise ApiError("access", f'You do not have the "{privilege}" privilege required for this action.')


def can_category(who: Principal, category_id: str) -> bool:
    return who.is_admin or not who.categories or category_id in who.categories


def can_group(who: Principal, group_id: str) -> bool:
    return who.is_admin or not who.groups or group_id in who.groups


def can_targets(who: Principal, targets: Iterable[str]) -> bool:
    """Empty targets (workflows) pass; otherwise any target must be an allowed group."""
    listed = list(targets)
    if not listed or who.is_admin or not who.groups:
        return True
    return any(t in who.groups for t in listed)


def require_category(who: Principal, category_id: str) -> None:
    if not can_category(who, category_id):
        raise ApiError("access", f"You do not have access to the category: {category_id}")


def require_unrestricted(who: Principal) -> None:
    if not who.is_admin and (who.categories or who.groups):
        raise ApiError("access", "This action requires an account without category or group restrictions.")


_FAMILIES = ("alerts", "buckets", "categories", "channels", "events", "groups", "monitors", "plugins", "roles",
             "tags", "tickets", "web_hooks")  # fmt: skip
# The 47 privilege keys of xyOps (digest section 2).
PRIVILEGES = frozenset(
    ["admin"]
    + [f"{verb}_{family}" for family in _FAMILIES for verb in ("create", "edit", "delete")]
    + ["run_jobs", "abort_jobs", "delete_jobs", "tag_jobs", "create_snapshots", "delete_snapshots",
       "add_servers", "update_servers", "send_emails", "bulk_export"]
)  # fmt: skip
DEFAULT_USER_PRIVILEGES = ("create_events", "edit_events", "run_jobs", "tag_jobs", "create_tickets", "edit_tickets")
