"""The definition families as stored (name = cache kind; list order)."""

from __future__ import annotations

from .definitions import Family

ROLES = Family("roles")
API_KEYS = Family("api_keys", newest_first=True)  # xyOps unshifts new keys
SECRETS = Family("secrets")
CATEGORIES = Family("categories")
PLUGINS = Family("plugins")
GROUPS = Family("groups")
TAGS = Family("tags")
CHANNELS = Family("channels")
EVENTS = Family("events")
WEB_HOOKS = Family("web_hooks")
MONITORS = Family("monitors")
ALERTS = Family("alerts")
