"""Secrets (digest 3.14): named variables sealed with AES-GCM; everyone sees metadata, only admins the values.

The variables (`fields`, [{name, value}]) are sealed into the hidden `encrypted` field of the same record
as the metadata, so both are written in one atomic step. Only the variable names (`names`) stay in the
clear. `decrypt_secret` is the one call that returns values, and it leaves a `secret_access` activity row.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import structlog

from storage import codec
from storage.families import SECRETS
from storage.secretbox import SecretBox, SecretBoxError
from storage.stores import Stores

from ..activity import audit_activity
from ..call import Call
from ..definitions import FamilySpec, Field, Record, register_family, shown
from ..errors import ApiError, bad_param
from ..params import array, ident
from ..registry import ADMIN, HANDLERS, Reply

log = structlog.get_logger("podium.secrets")

ENCRYPTED = "encrypted"  # the sealed fields, base64; listed in the spec's `hidden` and in activity's SECRET_FIELDS
NAME = re.compile(r"[A-Za-z_]\w*", re.ASCII)  # usable as an environment variable name


def _aad(secret_id: str) -> bytes:
    return f"secret:{secret_id}".encode()


def _box(call: Call) -> SecretBox:
    try:
        return SecretBox(call.stores.secret_key)
    except SecretBoxError as exc:
        raise ApiError("secret", f"Secrets are unavailable: {exc}.") from None


def clean_variables(value: Any) -> list[dict[str, str]]:
    """[{name, value}] with valid, unique names and string values. Errors never quote a value."""
    if not isinstance(value, list):
        raise bad_param("fields", "must be an array of {name, value} objects")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for n, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise bad_param("fields", f"item {n} must be an object with a name and a value")
        name = item.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise bad_param("fields", f"item {n} needs a name of letters, digits and underscores, "
                                      "not starting with a digit")  # fmt: skip
        if name in seen:
            raise bad_param("fields", f"has the name {name} more than once")
        if not isinstance(item.get("value"), str):
            raise bad_param("fields", f"item {n} ({name}) needs a string value")
        seen.add(name)
        out.append({"name": name, "value": item["value"]})
    return out


def seal(call: Call, record: Record, variables: list[dict[str, str]]) -> None:
    blob = _box(call).seal(codec.pack(variables), _aad(str(record["id"])))
    record["names"] = sorted(v["name"] for v in variables)
    record[ENCRYPTED] = base64.b64encode(blob).decode("ascii")


async def _before_create(call: Call, record: Record, current: Record | None) -> Reply | None:
    fields = call.params.get("fields")
    seal(call, record, clean_variables([] if fields is None else fields))
    return None


async def _before_update(call: Call, record: Record, current: Record | None) -> Reply | None:
    fields = call.params.get("fields")
    if fields is not None:  # new values: seal them again; otherwise the stored blob and names stay
        seal(call, record, clean_variables(fields))
    return None


async def _plugins_changed(call: Call, record: Record, current: Record | None) -> None:
    """A secret granted to plugins changed: agents get the monitor plugins again, with the new variables."""
    if record.get("plugins") or (current or {}).get("plugins"):
        from ..gateway import send_commands  # the gateway imports the handlers' registry

        await send_commands(call.stores)


SECRET_SPEC = FamilySpec(
    family=SECRETS,
    singular="secret",
    plural="secrets",
    prefix="z",
    hidden=frozenset({ENCRYPTED}),
    fields=(
        Field("title", "title", required=True),
        Field("enabled", "bool", default=True),
        Field("icon", "icon", default=""),
        Field("notes", "text", default=""),
        Field("events", "strings", default=[]),
        Field("categories", "strings", default=[]),
        Field("plugins", "strings", default=[]),
        Field("web_hooks", "strings", default=[]),
    ),
    before_create=_before_create,
    before_update=_before_update,
    after_write=_plugins_changed,
    after_delete=_plugins_changed,
    write_args=(array("fields", max_bytes=1024 * 1024, doc="[{name, value}] variables, sealed at rest"),),
)

secrets = register_family(SECRET_SPEC)


def open_variables(call: Call, record: Record) -> list[dict[str, str]]:
    """The decrypted [{name, value}] of a stored secret; ApiError `secret` if it cannot be opened."""
    return _open(_box(call), record)


def open_variables_from(stores: Stores, record: Record) -> list[dict[str, str]]:
    """The same for code without a call (an export); ApiError `secret` if it cannot be opened."""
    try:
        box = SecretBox(stores.secret_key)
    except SecretBoxError as exc:
        raise ApiError("secret", f"Secrets are unavailable: {exc}.") from None
    return _open(box, record)


def _open(box: SecretBox, record: Record) -> list[dict[str, str]]:
    secret_id = str(record.get("id"))
    try:
        blob = base64.b64decode(str(record.get(ENCRYPTED) or ""), validate=True)
        variables = codec.unpack(box.open_(blob, _aad(secret_id)))
    except SecretBoxError as exc:
        reason = str(exc)
    except (binascii.Error, ValueError):
        reason = "stored data is malformed"
    else:
        if isinstance(variables, list):
            return variables
        reason = "stored data is malformed"
    log.warning("secret_decrypt_failed", secret=secret_id, reason=reason)
    raise ApiError("secret", f"Failed to decrypt secret {secret_id}: {reason}.")


async def granted_variables(stores: Stores, job: Record) -> dict[str, str]:
    """The environment a job's plugin receives (`sec` of launch_job): the variables of every enabled secret
    granted to the job's event, category or plugin (digest 3.14). A secret that cannot be opened is left out
    (and logged by _open), so one broken secret does not stop every job."""
    wanted = (("events", job.get("event")), ("categories", job.get("category")), ("plugins", job.get("plugin")))
    out: dict[str, str] = {}
    box: SecretBox | None = None
    for record in await stores.defs.all(SECRETS):
        if not record.get("enabled", True) or not any(v and v in (record.get(k) or []) for k, v in wanted):
            continue
        try:
            box = box or SecretBox(stores.secret_key)
            variables = _open(box, record)
        except (ApiError, SecretBoxError):
            continue
        for var in variables:
            if NAME.fullmatch(str(var.get("name", ""))):
                out[str(var["name"])] = str(var.get("value", ""))
    return out


@HANDLERS.add("decrypt_secret", write=False, privilege=ADMIN, args=(ident(),))
async def decrypt_secret(call: Call) -> Reply:
    """The secret's variables in the clear (admin only; leaves a `secret_access` activity record)."""
    secret_id = call.params["id"]
    record = await call.stores.defs.get(SECRETS, secret_id)
    if record is None:
        raise ApiError("secret", f"Secret not found: {secret_id}")  # xyOps answers `secret` here, not notfound
    variables = open_variables(call, record)
    # Audited before it is revealed: no record, no secret.
    await audit_activity(call, "secret_access", str(record.get("title", "")), secret=shown(SECRET_SPEC, record))
    return {"fields": variables}
