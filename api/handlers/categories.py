"""Categories (digest 3.7): event groupings with default limits and actions; category-limited users see only theirs."""

from __future__ import annotations

from typing import Any

from storage.families import CATEGORIES, EVENTS

from ..actions import validate_actions, validate_limits
from ..call import Call
from ..definitions import FamilySpec, Field, register_family
from ..errors import ApiError, bad_param
from ..principal import can_category

_COLOR_NAMES = (
    "plain red fire orange tangerine amber gold yellow lemon lime grass green mint emerald aqua teal turquoise cyan "
    "ice skyblue azure blue sapphire indigo lavender violet orchid purple magenta fuchsia hotpink pink blush rose"
)
COLORS = frozenset(_COLOR_NAMES.split(" "))


async def _check(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    if record.get("color", "plain") not in COLORS:
        raise bad_param("color", "must be one of the category colours (plain, red, ... rose)")
    record["actions"] = await validate_actions(call.stores, record.get("actions"))
    record["limits"] = validate_limits(record.get("limits"))


async def _not_in_use(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    users = [e for e in await call.stores.defs.all(EVENTS) if e.get("category") == record["id"]]
    if users:
        raise ApiError("category", f"Category is in use by {len(users)} event(s), e.g. {users[0].get('id')}; "
                                   "move or delete them first.")  # fmt: skip


CATEGORY_SPEC = FamilySpec(
    family=CATEGORIES,
    singular="category",
    plural="categories",
    prefix="ca",
    create="create_categories",
    edit="edit_categories",
    delete="delete_categories",
    access=lambda who, rec: can_category(who, str(rec.get("id"))),
    multi=True,
    ordered=True,
    fields=(
        Field("title", "title", required=True),
        Field("enabled", "bool", default=True),
        Field("icon", "icon", default=""),
        Field("color", "text", default="plain", max_len=32),
        Field("notes", "text"),
        Field("sort_order", "int"),
        Field("actions", "any", default=[]),
        Field("limits", "any", default=[]),
    ),
    before_create=_check,
    before_update=_check,
    before_delete=_not_in_use,
)

categories = register_family(CATEGORY_SPEC)
