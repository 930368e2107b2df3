"""Roles (digest 3.12): named privilege sets with category/group limits, merged in on every request."""

from __future__ import annotations

from storage.families import ROLES

from ..definitions import FamilySpec, Field, register_family

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
)

roles = register_family(ROLE_SPEC)
