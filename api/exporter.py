"""admin_export_data: this cluster's data as an xyOps export (api/xyformat.py), line by line.

The selection is xyOps': `lists` (definition lists and users), `indexes` (database records), `extras`, each an array
or "all", or the advanced `items` array. Definitions are exported as the API shows them; users with their password
hash and salt, API keys with their stored hash (as xyOps does). Secret values are sealed in xyOps' scheme under the
passphrase the caller gives (`secret_key`); without one they are left out, with a comment line saying so.
Not exported (each said in a comment line): job logs and files, bucket and ticket files, avatars, monitor and stat
history, servers and snapshots.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.families import SECRETS
from storage.stores import Stores

from . import xyformat
from .definitions import FAMILY_SPECS, shown
from .errors import ApiError
from .handlers.secrets import open_variables_from

Record = dict[str, Any]
LIST_NAMES = ("alerts", "api_keys", "buckets", "categories", "channels", "events", "groups", "monitors", "plugins",
              "secrets", "tags", "users", "roles", "web_hooks")  # fmt: skip  # xyOps ui.list_list
INDEX_NAMES = ("alerts", "jobs", "servers", "snapshots", "activity", "tickets")  # xyOps ui.database_list
EXTRA_NAMES = ("job_files", "job_logs", "bucket_files", "ticket_files", "monitor_data", "stat_data", "user_avatars")
SEARCH_PAGE = 500
MAX_ITEMS = 100


@dataclass(slots=True)
class Selection:
    lists: list[str] = field(default_factory=list)
    indexes: list[tuple[str, int]] = field(default_factory=list)  # (index, max rows; 0 = all)
    users: bool = False
    secret_data: bool = False
    bucket_data: bool = False
    secret_ids: set[str] | None = None  # with secret data: only these (the ones audited); None = all
    skipped: list[str] = field(default_factory=list)  # what was asked for and is not exported


def _names(params: Record, name: str, known: Sequence[str]) -> list[str]:
    value = params.get(name)
    if value in (None, ""):
        return []
    if value == "all":
        return list(known)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError("admin", f"Invalid request ({name} must be an array).")
    return [v for v in value if v in known] + [f"{name}:{_printable(v)}" for v in value if v not in known]


def _printable(text: str) -> str:
    """A caller's unknown name as a comment line may show it: printable, short (a newline would start a line an
    import reads)."""
    return "".join(c if c.isprintable() else "?" for c in text[:40])


def for_non_admin(sel: Selection) -> None:
    """Leave out what only an admin may read elsewhere in Podium (⚠ xyOps' bulk_export exports everything): users
    (their password hashes), API keys (their hashes) and secret values; each named in a comment line."""
    hidden = [name for name in ("api_keys",) if name in sel.lists]
    sel.lists = [name for name in sel.lists if name not in hidden]
    hidden += ["users"] * sel.users + ["secret data"] * sel.secret_data
    sel.users = sel.secret_data = False
    sel.skipped += [f"{name} (admin only)" for name in hidden]


def selection(params: Record) -> Selection:
    """What to export, from the call's (or its token's) params; ApiError `admin` as xyOps answers."""
    sel = Selection()
    lists = _names(params, "lists", LIST_NAMES)
    indexes = _names(params, "indexes", INDEX_NAMES)
    extras = _names(params, "extras", EXTRA_NAMES)
    sel.skipped += [n for n in (*lists, *indexes, *extras) if ":" in n]
    for name in lists:
        if name == "users":
            sel.users = True
        elif ":" not in name:
            sel.lists.append(name)
    sel.secret_data, sel.bucket_data = "secrets" in lists, "buckets" in lists
    sel.indexes += [(n, 0) for n in indexes if ":" not in n]
    sel.skipped += [f"extras:{n}" for n in extras if ":" not in n]
    items = params.get("items") or []
    if not isinstance(items, list) or len(items) > MAX_ITEMS or not all(isinstance(i, dict) for i in items):
        raise ApiError("admin", f"Invalid request (items must be an array of at most {MAX_ITEMS} objects).")
    for item in items:
        kind, key = item.get("type"), str(item.get("key") or "")
        if kind == "index" and str(item.get("query") or "*").strip() != "*":  # never export more than was asked
            raise ApiError("admin", "Invalid request (items[].query: Podium exports a whole index; use * or none).")
        if kind == "list" and key.startswith("global/") and key[7:] in LIST_NAMES and key[7:] != "users":
            sel.lists.append(key[7:])
        elif kind == "index" and item.get("index") in INDEX_NAMES:
            rows = item.get("max_rows")
            sel.indexes.append((str(item["index"]), rows if isinstance(rows, int) and rows > 0 else 0))
        elif kind == "users":
            sel.users = True
        elif kind == "secretData":
            sel.secret_data = True
        elif kind == "bucketData":
            sel.bucket_data = True
        else:
            sel.skipped.append(f"items:{_printable(str(kind))}")
    if not (sel.lists or sel.indexes or sel.users or sel.secret_data or sel.bucket_data):
        raise ApiError("admin", "No data selected for export.")
    return sel


Search = Callable[[int, int], Awaitable[tuple[list[Record], int]]]


def _searches(stores: Stores) -> dict[str, Search]:
    return {
        "jobs": lambda o, n: stores.jobs.search("*", offset=o, limit=n),
        "tickets": lambda o, n: stores.tickets.search("*", o, n),
        "alerts": lambda o, n: stores.alerts.search("*", o, n),
        "activity": lambda o, n: stores.activity.search("*", o, n),
    }


async def export_lines(stores: Stores, sel: Selection, secret_key: str = "") -> AsyncIterator[str]:
    """The export, one line (or comment) at a time."""
    yield xyformat.header()
    for name in sel.skipped:
        yield f"# Not exported by Podium: {name}\n"
    for name in dict.fromkeys(sel.lists):
        spec = FAMILY_SPECS[name]
        yield f"\n# List: global/{name}\n"
        for text in xyformat.list_lines(f"global/{name}", [shown(spec, r) for r in await stores.defs.all(spec.family)]):
            yield text
    parts = ((sel.users, _users), (sel.secret_data, _secrets), (sel.bucket_data, _buckets))
    for wanted, part in parts:
        if wanted:
            async for text in part(stores, sel, secret_key):
                yield text
    for index, max_rows in sel.indexes:
        async for text in _index(stores, index, max_rows):
            yield text


async def _users(stores: Stores, sel: Selection, secret_key: str) -> AsyncIterator[str]:
    yield "\n# User Data:\n"
    users: list[Record] = []
    while True:
        page, total = await stores.users.page(len(users), SEARCH_PAGE)
        users += page
        if not page or len(users) >= total:
            break
    for text in xyformat.list_lines("global/users", [{"username": u["username"]} for u in users]):
        yield text
    for user in users:
        yield xyformat.line({"key": xyformat.user_key(str(user["username"])), "value": user})


async def _secrets(stores: Stores, sel: Selection, secret_key: str) -> AsyncIterator[str]:
    yield "\n# Encrypted Secret Data\n"
    if not secret_key:
        yield "# Secret values are not exported: no secret_key was given to encrypt them with.\n"
        return
    for record in await stores.defs.all(SECRETS):
        if sel.secret_ids is not None and str(record["id"]) not in sel.secret_ids:
            continue
        try:
            variables = open_variables_from(stores, record)
        except ApiError as exc:  # one secret that cannot be opened does not end the export (nor does it as xyOps)
            yield f"# Secret {_printable(str(record['id']))} not exported: {_printable(exc.description)}\n"
            continue
        # scrypt costs tens of ms per secret: off the event loop, so a long list cannot stall the node
        sealed = await asyncio.to_thread(xyformat.seal_secret, variables, secret_key, str(record["id"]))
        yield xyformat.line({"key": f"secrets/{record['id']}", "value": sealed})


async def _buckets(stores: Stores, sel: Selection, secret_key: str) -> AsyncIterator[str]:
    yield "\n# Bucket Data\n"
    for bucket in await stores.defs.all(FAMILY_SPECS["buckets"].family):
        contents = await stores.buckets.get(str(bucket["id"]))
        yield xyformat.line({"key": f"buckets/{bucket['id']}/data", "value": contents.data})


async def _index(stores: Stores, index: str, max_rows: int) -> AsyncIterator[str]:
    search = _searches(stores).get(index)
    if search is None:
        yield f"\n# Database Index: {index} (not exported by Podium)\n"
        return
    yield f"\n# Database Index: {index} (*)\n"
    offset = 0
    while True:
        want = SEARCH_PAGE if not max_rows else min(SEARCH_PAGE, max_rows - offset)
        if want <= 0:
            break
        rows, total = await search(offset, want)
        for row in rows:
            yield xyformat.line({"index": index, "id": str(row["id"]), "record": row})
        offset += want
        if not rows or offset >= total:
            break
