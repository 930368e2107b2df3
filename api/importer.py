"""admin_import_data: apply an export in the xyOps format (api/xyformat.py) to this cluster.

The file is read whole first (its size is bounded by the handler), grouped by kind, then applied in dependency
order (roles, categories, plugins, groups, ... before events, users, then the database records), so a record that
names another finds it whatever order the file listed them in. Every object is checked with the validation its
create/update call uses (the definition families' declared fields and hooks, api/definitions.py) and written whole
with the store's fenced write, or not at all: a bad record is reported with its line number and skipped, and the
rest carries on. A list the file replaces (the `listDelete` line an export writes before each list) loses, as in
xyOps, the objects the file does not hold, each through its delete call's checks; users are never deleted. A dry
run computes the same report and writes nothing.

Kept as given: ids, `created`, `modified`, `revision`, `username`, API key hashes (xyOps and Podium both store
sha256(plain key + key id), so imported keys keep working), user password hashes (the same bcrypt(password + salt)
scheme). Secrets are decrypted with the export's passphrase (`secret_key`) and sealed again under this cluster's key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

from cluster.node import NotPrimary
from storage.buckets import BucketError
from storage.definitions import DefinitionStore, Family
from storage.errors import Conflict, FencedError
from storage.families import ROLES
from storage.ids import CLIENT_ID
from storage.users import normalize

from . import params as P
from . import xyformat
from .activity import post_commit
from .call import Call
from .definitions import FAMILY_SPECS, FamilySpec, clean_fields
from .errors import ApiError
from .handlers.secrets import ENCRYPTED, SECRET_SPEC, clean_variables, open_variables
from .handlers.users import ACCESS_ARGS, PROFILE, USERNAME_ARG
from .importfile import Parsed, Report, list_incomplete, parse_file
from .importrecords import RECORD_ORDER, import_record
from .principal import PRIVILEGES, holds_admin
from .validate import privilege_map

Record = dict[str, Any]
Progress = Callable[[float], Awaitable[None] | None]
# Definition lists in the order they are applied: what others name first.
FAMILY_ORDER = ("roles", "categories", "plugins", "groups", "tags", "channels", "web_hooks", "monitors", "alerts",
                "buckets", "secrets", "api_keys", "events")  # fmt: skip
KEPT = ("username", "created", "modified", "revision")  # system fields an import keeps as given
_BCRYPT = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")
MAX_BCRYPT_COST = 14  # an imported hash above it would make every login of that user a denial of service
SESSION_FIELDS = ("password", "salt", "active", "locked")  # a change to any ends the user's sessions
_HEX64 = re.compile(r"[0-9a-f]{64}")
USER_PARAMS = (
    USERNAME_ARG, *ACCESS_ARGS,
    P.obj("privileges"), P.text("password", max_len=128), P.text("salt", max_len=256),
    P.flag("force_password_change"), P.flag("locked"), *PROFILE,
)  # fmt: skip
USER_ARGS = P.Validator(USER_PARAMS)
USER_FIELDS = frozenset(p.name for p in USER_PARAMS)
_FAMILY_ARGS: dict[str, P.Validator] = {}


def _count(value: Any) -> TypeGuard[int | float]:
    """A whole number of seconds or a revision (not a bool)."""
    return type(value) in (int, float) and bool(value >= 0)


def _keep_system(record: Record, item: Record, username: str) -> None:
    """The system fields as the file gives them (when well-formed), else what a create would set."""
    for name in KEPT:
        value = item.get(name)
        if name == "username" and isinstance(value, str) and len(value) <= P.ID_LEN:
            record[name] = value
        elif name != "username" and _count(value):
            record[name] = int(value)
    record.setdefault("username", username)
    record.setdefault("revision", 1)
    for name in ("created", "modified"):
        record.setdefault(name, int(time.time()))


def _ticket_order(row: tuple[int, str, Any]) -> tuple[float, float, int]:
    record = row[2] if isinstance(row[2], dict) else {}
    num, created = record.get("num"), record.get("created")
    return (num if _count(num) else float("inf"), created if _count(created) else 0.0, row[0])


def _bare(record: Record) -> Record:
    return {k: v for k, v in record.items() if k != ENCRYPTED}


class PlannedDefinitions(DefinitionStore):
    """A dry run's view of the definitions: the stored ones with what the run would have written on top, so a
    later object's checks find the objects it names (an event its category) as the real import would."""

    def __init__(self, base: DefinitionStore) -> None:
        super().__init__(base.db, base.bus)
        self.base = base
        self.planned: dict[str, dict[str, Record | None]] = {}

    def plan(self, family: Family, record: Record | None, obj_id: str = "") -> None:
        """`record` would be written (None: the object `obj_id` would be deleted)."""
        self.planned.setdefault(family.name, {})[str(record["id"]) if record is not None else obj_id] = record

    async def get(self, family: Family, obj_id: str) -> Record | None:
        planned = self.planned.get(family.name, {})
        return planned[obj_id] if obj_id in planned else await self.base.get(family, obj_id)

    async def all(self, family: Family) -> list[Record]:
        planned = self.planned.get(family.name, {})
        stored = await self.base.all(family)
        have = {str(r.get("id")) for r in stored}
        rows = [planned.get(str(r.get("id")), r) for r in stored]
        return [r for r in rows if r is not None] + [r for i, r in planned.items() if i not in have and r is not None]


class Importer:
    """One import run: `call` is the admin's call (its fence, stores and identity)."""

    def __init__(self, call: Call, *, secret_key: str = "", dry_run: bool = False,
                 progress: Progress | None = None) -> None:  # fmt: skip
        self.planned: PlannedDefinitions | None = None
        if dry_run:
            self.planned = PlannedDefinitions(call.stores.defs)
            call = dataclasses.replace(call, stores_view=dataclasses.replace(call.stores, defs=self.planned))
        self.call = call
        self.secret_key = secret_key
        self.report = Report(dry_run=dry_run)
        self.progress = progress
        self._done = 0
        self._total = 1

    @property
    def dry(self) -> bool:
        return self.report.dry_run

    async def _step(self) -> None:
        self._done += 1
        if self.progress is not None:
            maybe = self.progress(min(1.0, self._done / self._total))
            if maybe is not None:
                await maybe

    async def run(self, text: str) -> Report:
        """Parse `text` (off the event loop) and apply it."""
        parsed = await asyncio.to_thread(parse_file, text, self.report)
        return await self.apply(parsed)

    async def apply(self, parsed: Parsed) -> Report:
        """Apply a parsed file; a lost fence stops the run, answering what was done so far and an error saying so."""
        try:
            await self._apply(parsed)
        except (FencedError, NotPrimary):
            self.report.errors.append("Stopped: this node is no longer the primary; the report shows what was "
                                      "done before that.")  # fmt: skip
        return self.report

    async def _guarded(self, number: int, what: str, step: Awaitable[None]) -> None:
        """Run one object's check and write; any failure but a lost fence is an error line for that object."""
        try:
            await step
        except (FencedError, NotPrimary):
            raise
        except ApiError as exc:
            self.report.error(number, f"{what}: {exc.description}")
        except (Exception, RecursionError) as exc:
            self.report.error(number, f"{what}: cannot be imported ({type(exc).__name__})")

    async def _apply(self, parsed: Parsed) -> None:
        known = set(FAMILY_ORDER) | {"users"}
        for name in sorted(set(parsed.lists) - known):
            self.report.warn(f"List global/{name} is not imported (Podium has no such list).")
        items = {name: [(n, item) for _, (n, page) in sorted(parsed.lists.get(name, {}).items()) for item in page]
                 for name in FAMILY_ORDER}  # fmt: skip
        self._total = max(1, sum(len(v) for v in items.values()) + len(parsed.users)
                          + sum(len(v) for v in parsed.records.values()))  # fmt: skip
        for name in FAMILY_ORDER:
            spec = FAMILY_SPECS[name]
            # A list shown newest first (API keys) is created oldest first, so it lists in the same order here.
            for number, item in reversed(items[name]) if spec.family.newest_first else items[name]:
                await self._guarded(number, spec.singular, self._definition(spec, number, item, parsed))
                await self._step()
        await self._replace_lists(parsed, items)
        for number, value in parsed.users:
            await self._guarded(number, "user", self._user(number, value))
            await self._step()
        for index in RECORD_ORDER:
            rows = parsed.records.pop(index, [])
            if index == "tickets":  # numbered here as they come: in their own number order (an export is newest first)
                rows.sort(key=_ticket_order)
            for number, rec_id, record in rows:
                await self._guarded(number, f"{index} {rec_id[:40]}",
                                    import_record(self.call, self.report, index, number, rec_id, record))  # fmt: skip
                await self._step()
        for index, rows in parsed.records.items():
            self.report.skipped += len(rows)
            self.report.warn(f"Database index {index} is not imported ({len(rows)} records skipped).")

    async def _replace_lists(self, parsed: Parsed, items: dict[str, list[tuple[int, Any]]]) -> None:
        """A list the file replaces whole (its `listDelete` line, as an export writes before every list) loses the
        objects the file does not hold, as in xyOps; each goes through its delete call's checks (a category still
        in use stays, reported). Kinds that others name go last. Users are never deleted by an import."""
        for name in reversed(FAMILY_ORDER):
            number = parsed.replaced.get(name)
            if number is None:
                continue
            spec = FAMILY_SPECS[name]
            problem = list_incomplete(parsed, name)
            if problem is not None:
                self.report.error(number, f"list global/{name} is not replaced ({problem}): nothing of it deleted")
                continue
            kept = {str(item.get("id")) for _, item in items[name] if isinstance(item, dict)}
            for current in list(await self.call.stores.defs.all(spec.family)):
                if str(current.get("id")) not in kept:
                    await self._guarded(number, f"{spec.singular} {current.get('id')}",
                                        self._delete(spec, number, current))  # fmt: skip

    async def _delete(self, spec: FamilySpec, number: int, current: Record) -> None:
        obj_id, stores = str(current["id"]), self.call.stores
        try:
            if spec.before_delete is not None:
                await spec.before_delete(self.call, current, current)
        except ApiError as exc:
            self.report.error(number, f"{spec.singular} {obj_id} (not in the file's list): {exc.description}; kept")
            return
        if self.planned is not None:
            self.planned.plan(spec.family, None, obj_id)
        else:
            try:
                await stores.defs.delete(self.call.node.fence(), spec.family, obj_id, current.get("revision"))
            except Conflict as exc:
                self.report.error(number, f"{spec.singular} {obj_id}: changed meanwhile ({exc.reason}); kept")
                return
            if spec.after_delete is not None:
                async with post_commit(f"import:{spec.singular}_delete"):
                    await spec.after_delete(self.call, current, current)
        self.report.change(spec.singular, obj_id, "deleted")

    # -- definitions ---------------------------------------------------------------------------------------------

    async def _variables(self, number: int, secret_id: str, secrets: dict[str, tuple[int, Any]]) -> Any:
        """The secret's [{name, value}] from its `secrets/<id>` line, or None when it has none usable."""
        found = secrets.get(secret_id)
        if found is None:
            return None
        if not self.secret_key:
            self.report.warn("Secret values were not imported: give the exporting system's secret_key to decrypt "
                             "them (the secrets' other fields were).")  # fmt: skip
            return None
        try:
            opened = await asyncio.to_thread(xyformat.open_secret, found[1], self.secret_key, secret_id)  # scrypt
            return clean_variables(opened)
        except xyformat.FormatError as exc:
            self.report.warn(f"line {found[0]}: {exc}; its values were not imported")
        except ApiError as exc:  # decrypted, but not {name, value} variables this cluster can use
            self.report.warn(f"line {found[0]}: secret {secret_id}: {exc.description}; its values were not imported")
        return None

    async def _definition(self, spec: FamilySpec, number: int, item: Any, parsed: Parsed) -> None:
        kind = spec.singular
        obj_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(obj_id, str) or not CLIENT_ID.fullmatch(obj_id):
            self.report.error(number, f"{kind}: needs an `id` of lower-case letters, digits and underscores")
            return
        stores = self.call.stores
        current = await stores.defs.get(spec.family, obj_id)
        # What the object has besides its record: a secret's variables, a bucket's data.
        given: Any = None
        if spec is SECRET_SPEC:
            given = await self._variables(number, obj_id, parsed.secrets)
        elif spec.plural == "buckets" and obj_id in parsed.buckets:
            given = parsed.buckets[obj_id][1]
        try:
            record = await self._prepare(spec, item, current, given)
        except ApiError as exc:
            self.report.error(number, f"{kind} {obj_id}: {exc.description}")
            return
        if current is not None and await self._same(spec, current, record, given):
            self.report.change(kind, obj_id, "unchanged")
            return
        if self.planned is not None:
            self.planned.plan(spec.family, record)
        else:
            try:
                if spec.plural == "buckets":  # its contents first, as create_bucket writes them
                    await self._bucket_contents(obj_id, current, given)
                if current is None:
                    await stores.defs.create(self.call.node.fence(), spec.family, record)
                else:
                    await stores.defs.replace(self.call.node.fence(), spec.family, record, current.get("revision"))
            except Conflict as exc:
                self.report.error(number, f"{kind} {obj_id}: changed meanwhile ({exc.reason}); not imported")
                return
            except BucketError as exc:
                self.report.error(number, f"{kind} {obj_id}: {exc}; not imported")
                return
            if spec.after_write is not None:
                async with post_commit(f"import:{kind}"):
                    await spec.after_write(self.call, record, current)
        self.report.change(kind, obj_id, "created" if current is None else "updated")

    async def _prepare(self, spec: FamilySpec, item: Record, current: Record | None, variables: Any) -> Record:
        """The record to store: the declared fields validated and converted as create_<kind> does them, the system
        fields kept, then the family's own checks (before_create / before_update)."""
        validator = _FAMILY_ARGS.get(spec.plural)
        if validator is None:
            validator = _FAMILY_ARGS[spec.plural] = P.Validator(spec.create_args())
        names = {f.name for f in spec.fields}
        params = validator({k: v for k, v in item.items() if k in names} | {"id": item["id"]})
        if variables is not None:
            params["fields"] = variables
        # Defaults fill what a new object lacks; an object that exists here gets what the file says and no more.
        record = clean_fields(spec, params, creating=current is None)
        record["id"] = item["id"]
        for name, value in (current or {}).items():  # what the server set here (a stock plugin's flag) and the
            if name not in names and name not in record and item.get(name) == value:  # file agrees with, stays
                record[name] = value
        _keep_system(record, item, self.call.who.username)
        sub = dataclasses.replace(self.call, params=params)
        if spec.plural == "api_keys":  # keep the stored hash: the plain key is with its owner
            key = item.get("key")
            if not isinstance(key, str) or not _HEX64.fullmatch(key):
                raise ApiError("api", "an API key needs its `key` hash (64 hex digits)")
            record["key"], record["mask"] = key, str(item.get("mask") or "")[:64]
        elif spec.plural == "buckets":  # its contents are written with it (_bucket_contents), not by the hooks
            if variables is not None:
                try:
                    self.call.stores.buckets.packed_data(variables)
                except BucketError as exc:
                    raise ApiError("api", str(exc)) from None
        elif spec is SECRET_SPEC and variables is None:
            if current is not None:  # no values given: the stored ones stay
                record["names"], record[ENCRYPTED] = current.get("names", []), current.get(ENCRYPTED, "")
            else:
                params["fields"] = []
                assert spec.before_create is not None
                await spec.before_create(sub, record, None)
        else:
            hook = spec.before_create if current is None else spec.before_update
            if hook is not None:
                await hook(sub, record, current)
        return record

    async def _bucket_contents(self, bucket_id: str, current: Record | None, data: Any) -> None:
        buckets, fence = self.call.stores.buckets, self.call.node.fence()
        if current is None:
            await buckets.create(fence, bucket_id, data or {})
        elif data is not None:
            await buckets.replace_data(fence, bucket_id, data)

    async def _same(self, spec: FamilySpec, current: Record, record: Record, variables: Any) -> bool:
        if spec.plural == "buckets" and variables is not None and current == record:
            return bool((await self.call.stores.buckets.get(str(record["id"]))).data == variables)
        if spec is not SECRET_SPEC:
            return current == record
        if _bare(current) != _bare(record):
            return False
        return variables is None or open_variables(self.call, current) == variables

    # -- users ---------------------------------------------------------------------------------------------------

    async def _user(self, number: int, value: Any) -> None:
        name = value.get("username") if isinstance(value, dict) else None
        if not isinstance(name, str):
            self.report.error(number, "user: needs a `username`")
            return
        try:
            record = self._user_record(value)
        except ApiError as exc:
            self.report.error(number, f"user {name[:64]}: {exc.description}")
            return
        users = self.call.stores.users
        if holds_admin(record, await self.call.stores.defs.all(ROLES)):  # as admin_update: admins have no limits
            record["categories"], record["groups"] = [], []
        current = await users.get(name)
        if current is not None and current == record:
            self.report.change("user", name, "unchanged")
            return
        if not self.dry:
            try:
                if current is None:
                    await users.create(self.call.node.fence(), record)
                else:
                    await users.replace(self.call.node.fence(), record, current.get("revision"))
            except Conflict as exc:
                self.report.error(number, f"user {name}: changed meanwhile ({exc.reason}); not imported")
                return
            if current is not None and any(current.get(f) != record.get(f) for f in SESSION_FIELDS):
                # as admin_update: a new password, a lock or a deactivation ends the user's sessions
                mine = normalize(name) == normalize(self.call.who.username)  # the importing admin keeps this one
                await users.drop_sessions(self.call.node.fence(), normalize(name),
                                          keep=self.call.who.session_id if mine else None)  # fmt: skip
                await self.call.stores.logins.forget_known_addresses(normalize(name))
        self.report.change("user", name, "created" if current is None else "updated")

    def _user_record(self, value: Record) -> Record:
        params = USER_ARGS({k: v for k, v in value.items() if k in USER_FIELDS})
        if not isinstance(params.get("password"), str) or not _BCRYPT.fullmatch(params["password"]):
            raise ApiError("api", "the user's `password` must be a bcrypt hash")
        if int(params["password"].split("$")[2]) > MAX_BCRYPT_COST:
            raise ApiError("api", f"the user's password hash has a bcrypt cost above {MAX_BCRYPT_COST}")
        params["privileges"] = privilege_map(params, "privileges", PRIVILEGES) or {}
        record = {k: v for k, v in params.items() if v is not None}
        for name in ("created", "modified", "revision"):
            given = value.get(name)
            if _count(given):
                record[name] = int(given)
        record.setdefault("salt", "")
        if "active" in record:
            record["active"] = 1 if record["active"] else 0
        if not record.pop("locked", False):
            record.pop("locked", None)
        else:
            record["locked"] = True
        if not record.get("force_password_change"):
            record.pop("force_password_change", None)
        return record
