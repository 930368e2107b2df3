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


def holds_admin(record: Mapping[str, Any], roles: Iterable[Mapping[str, Any]]) -> bool:
    """Is a user or key record an administrator, by its own privileges or through an enabled role?"""
    return effective("user", "", record, {str(r.get("id")): r for r in roles}).is_admin


def privilege_title(privilege: str) -> str:
    return PRIVILEGE_TITLES.get(privilege) or f"({privilege})"


def require_privilege(who: Principal, privilege: str) -> None:
    """The privilege or admin; the refusal names the privilege by its title, in xyOps' words."""
    if who.is_admin or privilege in who.privileges:
        return
    title = privilege_title(privilege)
    if who.kind == "key":
        raise ApiError("access", f'API Key "{who.record.get("title", who.id)}" does not have the "{title}" '
                                 f"privilege required to perform this action.")  # fmt: skip
    raise ApiError("access", f'You do not have the "{title}" privilege required to perform this action.')


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


# xyOps' privilege list with its titles, in its order (internal/ui.json `privilege_list`; docs/privileges.md).
# A role, user or key may also hold ids outside it (xyOps stores any): they grant nothing here.
PRIVILEGE_TITLES: dict[str, str] = {
    "admin": "Administrator",
    "create_alerts": "Create Alerts",
    "edit_alerts": "Edit Alerts",
    "delete_alerts": "Delete Alerts",
    "create_buckets": "Create Buckets",
    "edit_buckets": "Edit Buckets",
    "delete_buckets": "Delete Buckets",
    "create_categories": "Create Categories",
    "edit_categories": "Edit Categories",
    "delete_categories": "Delete Categories",
    "create_channels": "Create Channels",
    "edit_channels": "Edit Channels",
    "delete_channels": "Delete Channels",
    "create_events": "Create Events",
    "edit_events": "Edit Events",
    "delete_events": "Delete Events",
    "create_groups": "Create Groups",
    "edit_groups": "Edit Groups",
    "delete_groups": "Delete Groups",
    "run_jobs": "Run Jobs",
    "abort_jobs": "Abort Jobs",
    "delete_jobs": "Delete Jobs",
    "tag_jobs": "Job Tags",
    "create_monitors": "Create Monitors",
    "edit_monitors": "Edit Monitors",
    "delete_monitors": "Delete Monitors",
    "create_plugins": "Create Plugins",
    "edit_plugins": "Edit Plugins",
    "delete_plugins": "Delete Plugins",
    "create_roles": "Create Roles",
    "edit_roles": "Edit Roles",
    "delete_roles": "Delete Roles",
    "create_tags": "Create Tags",
    "edit_tags": "Edit Tags",
    "delete_tags": "Delete Tags",
    "create_tickets": "Create Tickets",
    "edit_tickets": "Edit Tickets",
    "delete_tickets": "Delete Tickets",
    "create_web_hooks": "Create Web Hooks",
    "edit_web_hooks": "Edit Web Hooks",
    "delete_web_hooks": "Delete Web Hooks",
    "create_snapshots": "Create Snapshots",
    "delete_snapshots": "Delete Snapshots",
    "add_servers": "Add Servers",
    "update_servers": "Update Servers",
    "send_emails": "Send Emails",
    "bulk_export": "Bulk Export",
}
PRIVILEGES = frozenset(PRIVILEGE_TITLES)
DEFAULT_USER_PRIVILEGES = ("create_events", "edit_events", "run_jobs", "tag_jobs", "create_tickets", "edit_tickets")
