"""Generic CRUD for definition families: declare a family once and get its five handlers.

A `FamilySpec` names the family (storage family, singular/plural API names, id prefix), the
privileges of each verb, the fields with their types, and optional hooks for what is special
(API keys generate a secret on create; later families add group assignment, encryption, ...).
"""

from __future__ import annotations

import copy
import gzip
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from storage.definitions import Family
from storage.errors import Conflict
from storage.ids import CLIENT_ID, generate_id

from . import params as P
from .activity import log_activity, post_commit
from .call import Call
from .errors import ApiError, bad_param
from .principal import PRIVILEGES, Principal, require_unrestricted
from .registry import AUTH, HANDLERS, Registry, Reply
from .transport import accepts_gzip, bytes_reply, encode
from .validate import RESERVED_WORDS, no_reserved_keys, privilege_map, title

Record = dict[str, Any]
# A hook may change the record before it is stored and return extra reply keys.
Hook = Callable[[Call, Record, Record | None], Awaitable[Reply | None]]
GZIP_MIN_BYTES = 4096
# Fields the store owns; a client can never set them.
SYSTEM_FIELDS = frozenset({"id", "created", "modified", "revision", "username"})


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str  # text | title | bool | flag01 | int | number | strings | privileges | object | icon | any
    required: bool = False
    default: Any = None
    pattern: str | None = None
    max_len: int | None = None  # characters (text kinds) or items (strings); None = the kind's default
    max_bytes: int = P.OBJECT_BYTES  # encoded size (object, any)

    def param(self) -> P.Param:
        """The declared API parameter for this field (its type and bounds; the converter does the rest)."""
        kind, name = self.kind, self.name
        if kind in ("text", "title", "icon"):
            default_len = {"title": P.TITLE_LEN, "icon": 64}.get(kind, P.TEXT_LEN)
            pattern = r"[\w\-]+" if kind == "icon" else self.pattern
            # An optional text may be cleared with "": the pattern applies to anything else.
            return P.text(name, max_len=self.max_len or default_len,
                          pattern=f"(?:{pattern})|" if pattern is not None else None)  # fmt: skip
        if kind in ("bool", "flag01"):
            return P.flag(name)
        if kind == "int":
            return P.integer(name, ge=0)
        if kind == "number":
            return P.number(name)
        if kind == "strings":
            return P.strings(name, max_items=self.max_len or 256)
        if kind in ("privileges", "object"):
            return P.obj(name, max_bytes=self.max_bytes)
        return P.anything(name, max_bytes=self.max_bytes)


@dataclass(frozen=True, slots=True)
class FamilySpec:
    family: Family
    singular: str  # "role": get_role, create_role, reply key
    plural: str  # "roles": get_roles
    prefix: str  # generated id prefix
    fields: tuple[Field, ...]
    read: str | None = AUTH
    create: str = "admin"
    edit: str = "admin"
    delete: str = "admin"
    activity: str = ""  # activity action prefix (xyOps: "apikey" for API keys); default = singular
    client_ids: bool = True  # may a client choose the id?
    hidden: frozenset[str] = frozenset()  # stored but never returned
    before_create: Hook | None = None
    before_update: Hook | None = None
    before_delete: Hook | None = None
    # After-hooks run once the write is committed (create/update/multi_update: after_write, once per object
    # written; delete: after_delete). A failure is logged, never answered (api.activity.post_commit).
    after_write: Hook | None = None  # e.g. re-derive what follows from the object
    after_delete: Hook | None = None  # e.g. clean up what it owned
    # Who may see and touch an object (category/group-limited users); None = everybody.
    access: Callable[[Principal, Record], bool] | None = None
    multi: bool = False  # also declare multi_update_<singular> (unrestricted users only)
    ordered: bool = False  # a new object without `sort_order` goes to the end of the list
    update_returns: bool = False  # update_<singular> answers the full merged object (events, plugins)
    filters: bool = False  # get_<plural> treats every param as an exact-match filter on top-level props
    # Extra reply keys for get_<singular> (e.g. an event's running jobs).
    describe: Callable[[Call, Record], Awaitable[Reply]] | None = None
    # Parameters the hooks read besides the fields (e.g. a secret's variables, an event's `update_state`).
    write_args: tuple[P.Param, ...] = ()
    delete_args: tuple[P.Param, ...] = ()

    def create_args(self) -> tuple[P.Param, ...]:
        fields = tuple(f.param().with_(required=f.required) for f in self.fields)
        return (P.ident(required=False), *fields, *self.write_args)

    def update_args(self) -> tuple[P.Param, ...]:
        fields = tuple(f.param() for f in self.fields)
        return (P.ident(), P.integer("revision", ge=0, doc="refuse the update unless the stored revision is this"),
                *fields, *self.write_args)  # fmt: skip

    @property
    def action(self) -> str:
        return self.activity or self.singular


# What a field kind means beyond its declared type (the declarations in Field.param() have checked the type
# and bounds before a handler runs); kinds not listed are stored as validated.
_CONVERTERS: dict[str, Callable[[Field, Record], Any]] = {
    "title": lambda f, p: title(p, f.name, required=False),
    "flag01": lambda f, p: 1 if p[f.name] else 0,
    "privileges": lambda f, p: privilege_map(p, f.name, PRIVILEGES),
}


def clean_fields(spec: FamilySpec, params: Record, *, creating: bool) -> Record:
    """Field values from validated params: all of them (with defaults) on create, the given ones on update."""
    no_reserved_keys(params)
    out: Record = {}
    for f in spec.fields:
        present = f.name in params and params[f.name] is not None
        if not present:
            if creating and f.required:
                raise ApiError("api", f"Missing parameter: {f.name}")
            if creating and f.default is not None:
                out[f.name] = copy.deepcopy(f.default)
            continue
        convert = _CONVERTERS.get(f.kind)
        value = convert(f, params) if convert is not None else params[f.name]
        if f.required and (value is None or (isinstance(value, str) and not value.strip())):  # xyOps: /\S/
            raise ApiError("api", f"Missing parameter: {f.name}")
        out[f.name] = value
    return out


def loosely_equal(have: Any, want: Any) -> bool:
    """Filter matching for query-string values: "1"/"true" match True, "0"/"false" match False, numbers
    match their text. (xyOps uses JavaScript's `==`, where "true" == true is false; that is a quirk.)"""
    if isinstance(have, bool) or isinstance(want, bool):
        truthy = {"1", "true", "True"}
        return (str(have) in truthy or have is True) == (str(want) in truthy or want is True)
    return str(have) == str(want)


def next_sort_order(rows: list[Record]) -> int:
    """The position after the last one: highest `sort_order` + 1 (deletes leave holes, so not the count)."""
    orders = [r["sort_order"] for r in rows if type(r.get("sort_order")) in (int, float)]
    return int(max(orders, default=-1)) + 1


def shown(spec: FamilySpec, record: Record) -> Record:
    return {k: v for k, v in record.items() if k not in spec.hidden} if spec.hidden else record


class Definitions:
    """The generic handlers for one family, bound to its spec."""

    def __init__(self, spec: FamilySpec) -> None:
        self.spec = spec
        self.item_args = P.Validator(spec.update_args())  # each item of multi_update, as update_<singular>
        # The encoded full-list reply, and the cached family list it was made from (identity-checked:
        # the store hands out a new list after every change).
        self._encoded: tuple[list[Record], bytes, bytes | None] | None = None

    @property
    def label(self) -> str:
        return self.spec.singular.replace("_", " ").title()

    def check_access(self, call: Call, record: Record) -> None:
        if self.spec.access is not None and not self.spec.access(call.who, record):
            raise ApiError("access", f"You do not have access to this {self.spec.singular.replace('_', ' ')}: "
                                     f"{record.get('id')}")  # fmt: skip

    async def lookup(self, call: Call, obj_id: str) -> Record:
        found = await call.stores.defs.get(self.spec.family, obj_id)
        if found is None:
            raise ApiError("notfound", f"{self.label} not found: {obj_id}")
        self.check_access(call, found)
        return found

    async def visible(self, call: Call) -> list[Record]:
        rows = await call.stores.defs.all(self.spec.family)
        access = self.spec.access
        if access is None or call.user is None:
            return rows
        return [r for r in rows if access(call.who, r)]

    def _unrestricted(self, who: Principal) -> bool:
        return self.spec.access is None or who.is_admin or not (who.categories or who.groups)

    async def get_all(self, call: Call) -> Reply | web.StreamResponse:
        wanted = {k: v for k, v in call.params.items() if k not in ("offset", "limit")} if self.spec.filters else {}
        if wanted:
            rows = [r for r in await self.visible(call) if all(loosely_equal(r.get(k), v) for k, v in wanted.items())]
            return {"rows": [shown(self.spec, r) for r in rows], "list": {"length": len(rows)}}
        if not self._unrestricted(call.who) or "pretty" in call.query_reserved:
            rows = await self.visible(call)
            return {"rows": [shown(self.spec, r) for r in rows], "list": {"length": len(rows)}}
        # Everybody unrestricted gets the same bytes: encode once per version of the family.
        rows = await call.stores.defs.all(self.spec.family)
        cached = self._encoded
        if cached is None or cached[0] is not rows:
            body = encode({"code": 0, "rows": [shown(self.spec, r) for r in rows], "list": {"length": len(rows)}})
            # Big lists are also kept gzipped: most clients accept it and it is a tenth of the bytes to send.
            packed = gzip.compress(body, compresslevel=6, mtime=0) if len(body) > GZIP_MIN_BYTES else None
            cached = self._encoded = (rows, body, packed)
        if cached[2] is not None and accepts_gzip(call.request):
            return bytes_reply(cached[2], rid=call.request_id, gzipped=True)
        return bytes_reply(cached[1], rid=call.request_id)

    async def get_one(self, call: Call) -> Reply:
        found = await self.lookup(call, call.params["id"])
        reply: Reply = {self.spec.singular: shown(self.spec, found)}
        if self.spec.describe is not None:
            reply.update(await self.spec.describe(call, found))
        return reply

    def _new_id(self, params: Record) -> str:
        given = params.get("id")
        if given in (None, ""):
            return generate_id(self.spec.prefix)
        if not self.spec.client_ids:
            raise bad_param("id", "is assigned by the server")
        if not isinstance(given, str) or not CLIENT_ID.fullmatch(given) or given in RESERVED_WORDS:
            raise bad_param("id", "must contain only lower-case letters, digits and underscores")
        return given

    async def _after(self, hook: Hook | None, call: Call, record: Record, current: Record | None) -> None:
        """Run an after-hook: the write is committed, so a failure is logged and the call still succeeds."""
        if hook is not None:
            async with post_commit(f"{self.spec.singular}:{hook.__name__}"):
                await hook(call, record, current)

    async def create(self, call: Call) -> Reply:
        spec = self.spec
        record = clean_fields(spec, call.params, creating=True)
        now = int(time.time())
        record.update(id=self._new_id(call.params), username=call.who.username, created=now, modified=now,
                      revision=1)  # fmt: skip
        self.check_access(call, record)
        if spec.ordered and "sort_order" not in call.params:
            record["sort_order"] = next_sort_order(await call.stores.defs.all(spec.family))
        extra = await spec.before_create(call, record, None) if spec.before_create is not None else None
        try:
            await call.stores.defs.create(call.node.fence(), spec.family, record)
        except Conflict:
            raise ApiError(spec.singular, f"{self.label} already exists: {record['id']}") from None
        await log_activity(call, f"{spec.action}_create", f"Created {spec.singular}: {record.get('title', '')}",
                           **{spec.singular: record})  # fmt: skip
        await self._after(spec.after_write, call, record, None)
        return {spec.singular: shown(spec, record), **(extra or {})}

    async def update(self, call: Call) -> Reply:
        spec = self.spec
        obj_id = call.params["id"]
        changes = clean_fields(spec, call.params, creating=False)
        wanted = call.params.get("revision")
        for _ in range(5):
            current = await call.stores.defs.get(spec.family, obj_id)
            if current is None:
                raise ApiError(spec.singular, f"{self.label} not found: {obj_id}")
            self.check_access(call, current)
            if wanted not in (None, "") and str(wanted) != str(current.get("revision")):
                raise ApiError("api", f"Revision mismatch: {spec.singular} {obj_id} is at revision "
                                      f"{current.get('revision')}, not {wanted}.")  # fmt: skip
            record = {**copy.deepcopy(current), **changes}
            record["modified"] = int(time.time())
            record["revision"] = int(current.get("revision") or 0) + 1
            if spec.before_update is not None:
                await spec.before_update(call, record, current)
            try:
                await call.stores.defs.replace(call.node.fence(), spec.family, record, current.get("revision"))
            except Conflict as exc:
                if exc.reason == "revision":
                    continue  # somebody else wrote in between: merge again on top of theirs
                raise ApiError(spec.singular, f"{spec.singular.title()} not found: {obj_id}") from None
            await log_activity(call, f"{spec.action}_update", f"Updated {spec.singular}: {record.get('title', '')}",
                               **{spec.singular: record})  # fmt: skip
            await self._after(spec.after_write, call, record, current)
            return {spec.singular: shown(spec, record)} if spec.update_returns else {}
        raise ApiError(spec.singular, f"{spec.singular} {obj_id} is being changed concurrently; try again.")

    async def delete(self, call: Call) -> Reply:
        spec = self.spec
        obj_id = call.params["id"]
        current = await call.stores.defs.get(spec.family, obj_id)
        if current is None:
            raise ApiError(spec.singular, f"{self.label} not found: {obj_id}")
        self.check_access(call, current)
        if spec.before_delete is not None:
            await spec.before_delete(call, current, current)
        try:
            await call.stores.defs.delete(call.node.fence(), spec.family, obj_id)
        except Conflict:
            raise ApiError(spec.singular, f"{spec.singular.title()} not found: {obj_id}") from None
        await log_activity(call, f"{spec.action}_delete", f"Deleted {spec.singular}: {current.get('title', '')}",
                           **{spec.singular: current})  # fmt: skip
        await self._after(spec.after_delete, call, current, current)
        return {}

    async def multi_update(self, call: Call) -> Reply:
        """Update several objects (e.g. sort order) in one call; all items are validated before any is
        written, and, as in xyOps, revisions are not bumped."""
        spec = self.spec
        require_unrestricted(call.who)
        items = call.params.get("items")
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise ApiError("api", "Parameter 'items' must be a non-empty array of objects.")
        planned: list[tuple[Record, Record]] = []
        for raw in items:
            item = self.item_args(raw)
            obj_id = item["id"]
            current = await call.stores.defs.get(spec.family, obj_id)
            if current is None:
                raise ApiError(spec.singular, f"{self.label} not found: {obj_id}")
            changes = clean_fields(spec, item, creating=False)
            record = {**copy.deepcopy(current), **changes, "modified": int(time.time())}
            if spec.before_update is not None:  # the family's own checks (colour, regex, actions, ...)
                await spec.before_update(call, record, current)
            planned.append((current, record))
        fence = call.node.fence()
        for current, record in planned:
            await call.stores.defs.replace(fence, spec.family, record, current.get("revision"))
        await log_activity(call, f"{spec.action}_multi_update", f"Updated {len(planned)} {spec.plural}",
                           **{spec.plural: [r for _, r in planned]})  # fmt: skip
        for current, record in planned:
            await self._after(spec.after_write, call, record, current)
        return {}


# Every declared family by plural name (get_multiple, revision history).
FAMILY_SPECS: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec, registry: Registry = HANDLERS) -> Definitions:
    """Declare get_<plural>, get_<singular>, create_, update_ and delete_<singular>."""
    defs = Definitions(spec)
    FAMILY_SPECS[spec.plural] = spec
    one = (P.ident(),)
    registry.add(f"get_{spec.plural}", write=False, privilege=spec.read, args=())(defs.get_all)
    registry.add(f"get_{spec.singular}", write=False, privilege=spec.read, args=one)(defs.get_one)
    registry.add(f"create_{spec.singular}", write=True, privilege=spec.create, args=spec.create_args())(defs.create)
    registry.add(f"update_{spec.singular}", write=True, privilege=spec.edit, args=spec.update_args())(defs.update)
    registry.add(f"delete_{spec.singular}", write=True, privilege=spec.delete,
                 args=(*one, *spec.delete_args))(defs.delete)  # fmt: skip
    if spec.multi:
        items = (P.array("items", required=True, max_bytes=4 * P.OBJECT_BYTES, doc="objects with an `id` each"),)
        registry.add(f"multi_update_{spec.singular}", write=True, privilege=spec.edit, args=items)(defs.multi_update)
    return defs
