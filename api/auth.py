"""Authentication in the digest's order (1.3): session first, else API key; then validity and rate.

Everything a request needs (session, user, roles, API keys) comes from per-node caches that the
invalidation bus keeps fresh, so an authenticated read costs no Redis round trip, except the
cluster-wide rate counter for keys that have a `max_per_sec`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from storage.families import API_KEYS, ROLES
from storage.stores import Stores

from .call import Call
from .errors import ApiError
from .principal import Principal, effective
from .registry import SESSION

NO_CREDENTIALS = "No Session ID or API Key could be found"
INVALID_KEY = "Invalid API Key"
INVALID_SESSION = "Session has expired or is invalid."


def key_hash(plain: str, key_id: str) -> str:
    """How xyOps stores an API key: sha256 hex of the plain key followed by the key's id."""
    return hashlib.sha256((plain + key_id).encode()).hexdigest()


def _session_source(request: web.Request, body_reserved: Mapping[str, Any]) -> tuple[str, bool]:
    """(session id, came from the cookie): the cookie, else X-Session-ID, else the body's `session_id`."""
    cookie = request.cookies.get("session_id")
    if cookie:
        return cookie, True
    value = request.headers.get("X-Session-ID") or body_reserved.get("session_id")
    return (str(value), False) if value else ("", False)


def _key_source(request: web.Request, body_reserved: Mapping[str, Any], query_reserved: Mapping[str, Any]) -> str:
    """The API key: X-API-Key, else the body's `api_key`, else the query's."""
    value = request.headers.get("X-API-Key") or body_reserved.get("api_key") or query_reserved.get("api_key")
    return str(value) if value else ""


def _csrf_method(request: web.Request, write: bool) -> bool:
    return write or request.method not in ("GET", "HEAD")


def _is_active(value: Any) -> bool:
    return value is True or value == 1 or value == "1" or value == "true"


class Authenticator:
    def __init__(self, stores: Stores, *, use_csrf: bool) -> None:
        self.stores = stores
        self.use_csrf = use_csrf
        self._key_rows: list[dict[str, Any]] | None = None
        self._key_memo: dict[str, dict[str, Any] | None] = {}
        # Resolved principals, reused while the very same cached user/key record and role list are
        # current (the caches hand out new objects after every change, so identity is the version).
        self._principals: dict[tuple[str, str], tuple[object, object, Principal]] = {}
        # Hits and misses of the two memos above, (hits, misses) each, for the node's metrics.
        self.key_counts = [0, 0]
        self.principal_counts = [0, 0]

    def session_id(self, call: Call) -> tuple[str, bool]:
        """(session id, came from the cookie)."""
        return _session_source(call.request, call.body_reserved)

    def api_key(self, call: Call) -> str:
        return _key_source(call.request, call.body_reserved, call.query_reserved)

    async def authenticate(
        self, call: Call, privilege: str | None, *, csrf: bool = True, write: bool = False
    ) -> Principal:
        """`write`: the call changes something, so a cookie session must prove CSRF on any method
        (write calls also answer GET, and a cross-site navigation carries a SameSite=Lax cookie)."""
        sid, from_cookie = self.session_id(call)
        if sid:
            needs_csrf = csrf and from_cookie and _csrf_method(call.request, write)
            return await self._session(call.request, call.body_reserved, sid, needs_csrf)
        if privilege == SESSION:
            raise ApiError("session", "This call needs a user session (API keys are not accepted).")
        plain = self.api_key(call)
        if not plain:
            raise ApiError("session", NO_CREDENTIALS)
        return await self._key(plain)

    async def from_headers(
        self, request: web.Request, query_reserved: Mapping[str, Any], privilege: str, *, write: bool
    ) -> Principal | None:
        """Authenticate from what arrives before the body (cookie, headers, query), so a body is only read
        in full for a known caller. None when the credential, or a cookie session's CSRF token, can only be
        in the body; bad credentials in the headers are refused here, before the body is read."""
        sid, from_cookie = _session_source(request, {})
        if sid:
            needs_csrf = from_cookie and _csrf_method(request, write)
            if needs_csrf and self.use_csrf and not request.headers.get("X-CSRF-Token"):
                return None
            return await self._session(request, {}, sid, needs_csrf)
        if privilege == SESSION:
            return None
        plain = _key_source(request, {}, query_reserved)
        return await self._key(plain) if plain else None

    async def check_cookie_csrf(self, call: Call) -> None:
        """A write that needs no privilege (logout) still acts on a cookie session: the token is required."""
        sid = call.request.cookies.get("session_id")
        if not sid or not self.use_csrf:
            return
        session = await self.stores.users.session(sid)
        if session is not None:
            self._check_csrf(call.request, call.body_reserved, session)

    async def principal(self, kind: str, obj_id: str, record: dict[str, Any], session_id: str = "") -> Principal:
        """Privileges merged with enabled roles; computed once per version of the record and roles."""
        roles = await self.stores.defs.all(ROLES)
        memo_key = (kind, session_id or obj_id)
        hit = self._principals.get(memo_key)
        if hit is not None and hit[0] is record and hit[1] is roles:
            self.principal_counts[0] += 1
            return hit[2]
        self.principal_counts[1] += 1
        who = effective(kind, obj_id, record, {str(r["id"]): r for r in roles}, session_id=session_id)
        if len(self._principals) > 10_000:
            self._principals.clear()
        self._principals[memo_key] = (record, roles, who)
        return who

    def _check_csrf(self, request: web.Request, body_reserved: Mapping[str, Any], session: Mapping[str, Any]) -> None:
        if self.use_csrf and session.get("csrf_token"):
            sent = request.headers.get("X-CSRF-Token") or body_reserved.get("csrf_token") or ""
            if not hmac.compare_digest(str(sent), str(session["csrf_token"])):
                raise ApiError("session", "Invalid session (CSRF token missing or wrong).")

    async def _session(
        self, request: web.Request, body_reserved: Mapping[str, Any], sid: str, check_csrf: bool
    ) -> Principal:
        session = await self.stores.users.session(sid)
        if session is None:
            raise ApiError("session", INVALID_SESSION)
        # CSRF applies to cookie sessions only: a header or body session id cannot be sent by a foreign page.
        if check_csrf:
            self._check_csrf(request, body_reserved, session)
        user = await self.stores.users.get(str(session["username"]))
        if user is None:
            raise ApiError("session", INVALID_SESSION)
        if not _is_active(user.get("active", 1)):
            raise ApiError("session", "User account is disabled.")
        if user.get("locked"):
            raise ApiError("session", "User account is locked.")
        return await self.principal("user", str(user["username"]), user, session_id=sid)

    async def lookup_key(self, plain: str) -> dict[str, Any] | None:
        rows = await self.stores.defs.all(API_KEYS)
        if rows is not self._key_rows:  # the family changed: forget every memoised lookup
            self._key_rows, self._key_memo = rows, {}
        memo_key = hashlib.sha256(plain.encode()).hexdigest()
        if memo_key in self._key_memo:
            self.key_counts[0] += 1
            return self._key_memo[memo_key]
        self.key_counts[1] += 1
        found = None
        for row in rows:
            if hmac.compare_digest(key_hash(plain, str(row.get("id", ""))), str(row.get("key", ""))):
                found = row
                break
        if len(self._key_memo) > 10_000:
            self._key_memo.clear()
        self._key_memo[memo_key] = found
        return found

    async def _key(self, plain: str) -> Principal:
        key = await self.lookup_key(plain)
        if key is None or not _is_active(key.get("active", 1)):
            raise ApiError("session", INVALID_KEY)
        expires = key.get("expires") or 0
        if expires and float(expires) <= time.time():
            raise ApiError("session", INVALID_KEY)
        limit = int(key.get("max_per_sec") or 0)
        if limit > 0 and await self.stores.rates.hit(str(key["id"])) > limit:
            raise ApiError("rate", f"API Key has exceeded rate limit ({limit}/sec)")
        return await self.principal("key", str(key["id"]), key)
