"""One module per API area; importing this package registers every handler."""

from . import (
    account,
    activity,
    apikeys,
    categories,
    channels,
    groups,
    misc,
    multi,
    plugins,
    roles,
    secrets,
    state,
    tags,
    testhooks,
    users,
    webhooks,
)

__all__ = [
    "account",
    "activity",
    "apikeys",
    "categories",
    "channels",
    "groups",
    "misc",
    "multi",
    "plugins",
    "roles",
    "secrets",
    "state",
    "tags",
    "testhooks",
    "users",
    "webhooks",
]
