"""One module per API area; importing this package registers every handler."""

from . import account, activity, apikeys, misc, roles, state, testhooks, users

__all__ = ["account", "activity", "apikeys", "misc", "roles", "state", "testhooks", "users"]
