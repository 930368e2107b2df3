"""Bulk transfer (digest: admin_export_data, admin_import_data, get_transfer_token): the xyOps export format.

⚠ Deviations from xyOps, on purpose:
- admin_import_data runs inside the call (the upload is bounded by IMPORT_MAX_BYTES) and answers the report
  `{code: 0, report: {lines, records, keys, commands, created, updated, unchanged, deleted, skipped, errors,
  warnings, changes}}` instead of an internal job id; api/importer.py is a plain coroutine with a progress
  callback, ready to run as an internal job. It neither pauses the scheduler nor aborts running jobs (`danger` is
  accepted and changes nothing): each object is written whole by the store's own fenced write. `dry_run` reports
  and writes nothing. `format=cronicle` is refused.
- A transfer token binds the params to the user who asked for it: the export still needs that user's credentials
  (the browser's session cookie goes with the GET), the token only carries the params and is used once (presented
  by another user it is refused, and spent).
- Secret values are exported sealed under a passphrase the caller gives (`secret_key`), in xyOps' scheme, so an
  xyOps system configured with that secret_key reads them; Podium's own cluster key never leaves the cluster. As
  that amounts to reading them, it needs the admin privilege (bulk_export alone exports everything else); a token
  keeps the passphrase sealed under the cluster key.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import zlib
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from storage.families import SECRETS
from storage.secretbox import SecretBox, SecretBoxError
from storage.transfer import TransferTokens, import_lock

from .. import params as P
from ..activity import audit_activity, log_activity
from ..call import Call
from ..definitions import shown
from ..errors import ApiError
from ..exporter import export_lines, for_non_admin, selection
from ..importer import Importer
from ..importfile import Parsed, Report, parse_file
from ..principal import require_unrestricted
from ..registry import ADMIN, HANDLERS, Reply
from ..transport import stream_headers
from .secrets import SECRET_SPEC

IMPORT_MAX_BYTES = 64 * 1024 * 1024  # the uploaded file, as sent
IMPORT_MAX_TEXT = 128 * 1024 * 1024  # and once un-gzipped (parsed whole in memory: a few times this)
_FIELD_MAX = 4096
_PARTS_MAX = 32  # parts of the import form (the file and a few text fields)
SELECTORS = (
    P.anything("lists", doc='list ids (alerts, api_keys, ..., users, web_hooks) or "all"'),
    P.anything("indexes", doc='database indexes (alerts, jobs, tickets, activity, ...) or "all"'),
    P.anything("extras", doc='extras or "all" (Podium exports none of them and says so in the file)'),
    P.array("items", doc="advanced: [{type: list|index|users|secretData|bucketData, ...}]"),
    P.text("secret_key", max_len=1024, doc="passphrase to seal secret values with (xyOps' scheme)"),
)


@HANDLERS.add("get_transfer_token", write=True, privilege=ADMIN, args=SELECTORS)
async def get_transfer_token(call: Call) -> Reply:
    """A single-use token (60 s) carrying admin_export_data's params, for a plain GET download."""
    selection(call.params)  # refuse a bad selection now, not at download time
    token = secrets.token_urlsafe(24)
    params = {k: v for k, v in call.params.items() if v not in (None, "")}
    if "secret_key" in params:  # never in the clear in the store: sealed under the cluster key, bound to the token
        blob = _box(call).seal(str(params["secret_key"]).encode(), _aad(token))
        params["secret_key"] = base64.b64encode(blob).decode("ascii")
    await TransferTokens(call.stores.db).put(token, {"username": call.who.username, "params": params})
    return {"token": token}


def _box(call: Call) -> SecretBox:
    try:
        return SecretBox(call.stores.secret_key)
    except SecretBoxError as exc:
        raise ApiError("secret", f"Secrets are unavailable: {exc}.") from None


def _aad(token: str) -> bytes:
    return f"transfer:{token}".encode()


async def _token_params(call: Call, token: str) -> dict[str, Any]:
    found = await TransferTokens(call.stores.db).take(token)
    if found is None or found.get("username") != call.who.username:
        raise ApiError("admin", "Access denied.")  # deliberately vague, as xyOps
    params = dict(found.get("params") or {})
    if "secret_key" in params:
        try:
            params["secret_key"] = _box(call).open_(base64.b64decode(str(params["secret_key"])), _aad(token)).decode()
        except (SecretBoxError, ValueError):
            raise ApiError("admin", "Access denied.") from None
    return params


@HANDLERS.add("admin_export_data", write=False, privilege="bulk_export",
              args=(*SELECTORS, P.text("token", max_len=64, doc="from get_transfer_token")))  # fmt: skip
async def admin_export_data(call: Call) -> web.StreamResponse:
    """Stream a gzip'd NDJSON export (xyOps format) of the selected data."""
    params = await _token_params(call, str(call.params["token"])) if call.params.get("token") else call.params
    sel = selection(params)
    secret_key = str(params.get("secret_key") or "")
    if secret_key and not call.who.is_admin:  # sealing them under a passphrase of one's own is reading them
        raise ApiError("access", "Exporting secret values (secret_key) requires the admin privilege.")
    if not call.who.is_admin:
        require_unrestricted(call.who)  # an export is not filtered by category or group: whole or nothing
        for_non_admin(sel)
    if secret_key and sel.secret_data:  # audited before anything is sent, as decrypt_secret: no record, no secret
        sel.secret_ids = set()  # and only those audited are sent (not one created meanwhile)
        for record in await call.stores.defs.all(SECRETS):
            await audit_activity(call, "secret_access", f"Exported secret: {record.get('title', '')}",
                                 secret=shown(SECRET_SPEC, record))  # fmt: skip
            sel.secret_ids.add(str(record["id"]))
    resp = web.StreamResponse(headers=stream_headers(call, {
        "Content-Type": "application/gzip", "X-Request-ID": call.request_id,
        "Content-Disposition": 'attachment; filename="podium-data-export.txt.gz"'}))  # fmt: skip
    await resp.prepare(call.request)
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    pending: list[bytes] = []
    size = 0
    async for text in export_lines(call.stores, sel, secret_key):
        pending.append(packer.compress(text.encode()))
        size += len(pending[-1])
        if size > 64 * 1024:
            await resp.write(b"".join(pending))
            pending, size = [], 0
    pending.append(packer.flush())
    await resp.write(b"".join(pending))
    await resp.write_eof()
    await log_activity(call, "admin_export_data", "Exported data")
    return resp


def _gunzip(data: bytes, name: str = "file1") -> bytes:
    """The file un-gzipped (every member of a multi-member gzip file); a file that is not gzip as it is."""
    if data[:2] != b"\x1f\x8b":
        return data
    out: list[bytes] = []
    size, rest = 0, data
    while rest:
        unpack = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = unpack.decompress(rest, IMPORT_MAX_TEXT + 1 - size)
        except zlib.error:
            raise ApiError("api", f"The file {name} is not valid gzip data.") from None
        size += len(chunk)
        out.append(chunk)
        if size > IMPORT_MAX_TEXT or unpack.unconsumed_tail:
            raise ApiError("admin", f"The file un-gzips to more than {IMPORT_MAX_TEXT // (1024 * 1024)} MB.")
        if not unpack.eof:
            raise ApiError("api", f"The file {name} is truncated (its gzip data ends early).")
        rest = unpack.unused_data
        if rest and rest[:2] != b"\x1f\x8b":
            if rest.strip(b"\0"):  # trailing zero padding is tolerated, as gzip does
                raise ApiError("api", f"The file {name} has data after its gzip data.")
            break
    return b"".join(out)


def _load(data: bytes, report: Report) -> Parsed:
    """Un-gzip, decode and parse the file (CPU work: run in a thread, off the event loop)."""
    try:
        text = _gunzip(data).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("admin", "The file is not UTF-8 text.") from None
    return parse_file(text, report)


async def _read_form(call: Call) -> tuple[bytes | None, dict[str, str]]:
    """The one file and the text fields of a multipart body, each bounded; ApiError `api` for a malformed body."""
    try:
        return await _read_parts(call)
    except (ValueError, AssertionError, BadHttpMessage) as exc:  # aiohttp's refusals of a malformed multipart body
        raise ApiError("api", f"Malformed form body: {str(exc)[:200]}") from None


async def _read_parts(call: Call) -> tuple[bytes | None, dict[str, str]]:
    if call.request.content_length is not None and call.request.content_length > IMPORT_MAX_BYTES + 65536:
        raise ApiError("admin", f"The file is larger than {IMPORT_MAX_BYTES // (1024 * 1024)} MB.", status=413)
    if not call.request.content_type.startswith("multipart/"):
        raise ApiError("admin", "No file data found for import (send multipart/form-data).")
    reader = await call.request.multipart()
    data: bytes | None = None
    fields: dict[str, str] = {}
    parts, body = 0, 0
    while (part := await reader.next()) is not None:
        parts += 1
        if parts > _PARTS_MAX:
            raise ApiError("admin", f"The form has more than {_PARTS_MAX} parts.", status=413)
        if not isinstance(part, BodyPartReader):
            continue
        limit = IMPORT_MAX_BYTES if part.filename else _FIELD_MAX
        chunks, total = [], 0
        while chunk := await part.read_chunk(65536):
            total += len(chunk)
            body += len(chunk)
            if body > IMPORT_MAX_BYTES + 65536:  # a chunked body gives no Content-Length to refuse up front
                raise ApiError("admin", f"The file is larger than {IMPORT_MAX_BYTES // (1024 * 1024)} MB.", status=413)
            if total > limit:
                what = "file" if part.filename else f"field {part.name}"
                raise ApiError("admin", f"The {what} is larger than {limit // 1024} KB.", status=413)
            chunks.append(chunk)
        if part.filename:
            if data is not None:
                raise ApiError("admin", "Send one file only.")
            data = b"".join(chunks)
        elif part.name:
            fields[part.name] = b"".join(chunks).decode("utf-8", "replace")
    return data, fields


IMPORT_ARGS = P.Validator((
    P.text("format", max_len=16, choices=("xyops", "cronicle")), P.flag("danger"), P.flag("dry_run"),
    P.text("secret_key", max_len=1024),
))  # fmt: skip


@HANDLERS.add("admin_import_data", write=True, privilege=ADMIN, own_body=True, form=IMPORT_ARGS,
              form_files=("file1",), args=())  # fmt: skip
async def admin_import_data(call: Call) -> Reply:
    """Import an xyOps-format export (multipart, one file, may be gzip'd); answers the import's report."""
    data, fields = await _read_form(call)
    opts: dict[str, Any] = IMPORT_ARGS({**call.query, **fields})
    if opts.get("format") == "cronicle":
        raise ApiError("admin", "Cronicle data is not supported: import an xyOps export.")
    if not data:
        raise ApiError("admin", "No file data found for import")
    importer = Importer(call, secret_key=str(opts.get("secret_key") or ""), dry_run=bool(opts.get("dry_run")))
    async with import_lock(call.stores.db) as held:
        if not held and not importer.report.dry_run:
            raise ApiError("admin", "Another import is running; try again when it has finished.")
        parsed = await asyncio.to_thread(_load, data, importer.report)
        del data
        report = await importer.apply(parsed)
    if not report.lines and not report.errors:
        raise ApiError("admin", "No valid rows found in file.")
    if not report.dry_run:
        await log_activity(call, "admin_import_data", f"Imported data: {report.created} created, "
                                                      f"{report.updated} updated")  # fmt: skip
    return {"report": report.as_dict()}
