"""Notification channels (digest 3.17): who hears about an event, and how."""

from __future__ import annotations

from typing import Any

from storage.families import CHANNELS, EVENTS, WEB_HOOKS

from ..call import Call
from ..definitions import FamilySpec, Field, register_family
from ..errors import bad_param


async def _check(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    for username in record.get("users") or []:
        if await call.stores.users.get(username) is None:
            raise bad_param("users", f"refers to an unknown user '{username}'")
    for field, family in (("web_hook", WEB_HOOKS), ("run_event", EVENTS)):
        ref = record.get(field)
        if ref and await call.stores.defs.get(family, str(ref)) is None:
            raise bad_param(field, f"refers to an unknown {field.replace('_', ' ')} '{ref}'")
    sound = record.get("sound") or ""
    if sound and not (sound.endswith(".mp3") and "/" not in sound):
        raise bad_param("sound", "must be an .mp3 file name")


CHANNEL_SPEC = FamilySpec(
    family=CHANNELS,
    singular="channel",
    plural="channels",
    prefix="ch",
    create="create_channels",
    edit="edit_channels",
    delete="delete_channels",
    fields=(
        Field("title", "title", required=True),
        Field("enabled", "bool", default=True),
        Field("icon", "icon", default=""),
        Field("users", "strings", default=[], max_len=1000),
        Field("email", "text", default="", max_len=4096),
        Field("web_hook", "text", default="", max_len=128),
        Field("run_event", "text", default="", max_len=128),
        Field("sound", "text", default="", max_len=128),
        Field("shell_exec", "text", default=""),
        Field("max_per_day", "int", default=0),
        Field("notes", "text"),
    ),
    before_create=_check,
    before_update=_check,
)

channels = register_family(CHANNEL_SPEC)
