"""bcrypt passwords in the xyOps scheme: bcrypt(password + per-user salt).

bcrypt reads at most 72 bytes; xyOps' bcryptjs silently truncates there, so we truncate the same
way (imported xyOps users keep working). New users get a short salt so nearly the whole password
counts.
"""

from __future__ import annotations

import asyncio
import secrets

import bcrypt

ROUNDS = 10  # xyOps' cost factor


def _material(password: str, salt: str) -> bytes:
    return (password + salt).encode()[:72]


def new_salt() -> str:
    return secrets.token_hex(4)


def _hash(password: str, salt: str) -> str:
    return bcrypt.hashpw(_material(password, salt), bcrypt.gensalt(ROUNDS)).decode()


# A well-formed hash of the same cost that no password matches (its digest is all zero bits): checked
# when there is no real hash, so a login for a missing account costs what a real check costs.
_DUMMY = (bcrypt.gensalt(ROUNDS) + b"." * 31).decode()


def _check(password: str, salt: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(_material(password, salt), hashed.encode())
    except ValueError:
        return False


async def hash_password(password: str, salt: str) -> str:
    """Hash off the event loop (bcrypt is deliberately slow)."""
    return await asyncio.to_thread(_hash, password, salt)


async def check_password(password: str, salt: str, hashed: str) -> bool:
    return await asyncio.to_thread(_check, password, salt, hashed)


async def verify(password: str, salt: str, hashed: str | None) -> bool:
    """Exactly one bcrypt check whatever the account: against `hashed`, or the dummy when there is no
    usable hash (then the answer is always False)."""
    real = hashed is not None and hashed.startswith("$2") and len(hashed) == 60
    ok = await check_password(password, salt, hashed if real and hashed is not None else _DUMMY)
    return ok and real
