"""`podium user unlock|password USERNAME`: account recovery straight in the store, for when no
administrator can log in (every admin locked out, password lost) and no admin API key is at hand.

These commands run beside the nodes, not as one, so they hold no lease. They use the store's operator
writes (storage/users.py `operator_update`), which are compare-and-set on the user's revision instead of
fenced: see there why that is safe.
"""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Callable
from typing import Any

from storage.activity import ActivityStore
from storage.bus import InvalidationBus
from storage.connection import Database
from storage.logins import LoginGuard
from storage.users import UserStore, normalize

from .activity import build_record
from .passwords import hash_password, new_salt
from .settings import ConfigError
from .status import operator_store


async def _change(db: Database, username: str, change: Callable[[dict[str, Any]], bool], what: str) -> None:
    users = UserStore(db, InvalidationBus(db))
    if await users.operator_update(username, change) is None:
        raise ConfigError(f"user {username!r} not found")
    record = build_record(None, "user_update", f"{what}: {username} (podium user, on the store)",
                          user={"username": username})  # fmt: skip
    await ActivityStore(db).add(record)


async def unlock(url: str, cluster: str, username: str) -> str:
    """Lift the administrator's lock (`locked`) and every temporary login lock of the name."""
    async with operator_store(url, cluster) as db:
        found: list[bool] = []

        def lift(user: dict[str, Any]) -> bool:
            found.append(bool(user.pop("locked", None)))
            if found[-1]:
                user["modified"] = int(time.time())
            return found[-1]

        await _change(db, username, lift, "User unlocked")
        await LoginGuard(db).clear(normalize(username))
    state = "account lock lifted" if found and found[-1] else "account was not locked"
    return f"user {username}: {state}; temporary login locks cleared"


async def set_password(url: str, cluster: str, username: str, password: str) -> str:
    """A new salt and bcrypt hash (as the API sets them), the account unlocked, every session ended."""
    salt = new_salt()
    hashed = await hash_password(password, salt)

    def reset(user: dict[str, Any]) -> bool:
        user.update(salt=salt, password=hashed, modified=int(time.time()))
        user.pop("force_password_change", None)
        user.pop("locked", None)
        return True

    async with operator_store(url, cluster) as db:
        await _change(db, username, reset, "Password changed")
        users, logins = UserStore(db, InvalidationBus(db)), LoginGuard(db)
        await logins.clear(normalize(username))
        await logins.forget_known_addresses(normalize(username))
        ended = await users.operator_drop_sessions(normalize(username))
    return f"user {username}: password changed; {ended} session(s) ended"


def read_new_password() -> str:
    """From a prompt (asked twice) on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if first != getpass.getpass("Repeat it: "):
            raise ConfigError("the passwords do not match")
        password = first
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ConfigError("no password given (type it at the prompt or pipe it on stdin)")
    return password
