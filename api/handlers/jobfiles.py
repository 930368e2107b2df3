"""The agents' job file upload (digest 3.2 `upload_job_file`): on any node, with agent credentials, streamed
to the file store under its own body limit."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp import BodyPartReader
from aiohttp.http_exceptions import BadHttpMessage

from storage.files import CHUNK, BadPath, FileTooLarge, StorageFull

from ..agentauth import agent_may_act
from ..call import Call
from ..errors import ApiError, bad_param
from ..params import ID_LEN, Validator, text
from ..registry import HANDLERS, NONE, Reply
from ..uploads import stored_name as stored_name  # the one name rule of every upload
from .joblogs import JOB_ID

log = structlog.get_logger("podium.jobfiles")

MAX_FIELDS = 16
FIELD_BYTES = 4096
UPLOAD_FIELDS = Validator((JOB_ID, text("auth", required=True, max_len=128, pattern=r"\w+"),
                           text("server", max_len=ID_LEN, pattern=r"[A-Za-z0-9_]+")))  # fmt: skip


# -- upload_job_file ------------------------------------------------------------------------------------------


async def _authorize(call: Call, fields: dict[str, str], name: str) -> str:
    """Check the upload's fields and credentials; returns the storage key for its file (stored as `name`)."""
    params = UPLOAD_FIELDS(dict(fields))
    job_id, server = params["id"], params.get("server") or ""
    job = await call.stores.jobs.get(job_id)
    if not agent_may_act(job or {"server": server}, job_id, params["auth"], server, call.stores.secret_key):
        raise ApiError("auth", "Authentication failure", status=403)
    if job is None or job.get("state") not in ("active", "finishing"):
        # ⚠ xyOps takes files for jobs that have finished too ("files may come in late"); Podium only while
        # the job runs on its agent (it uploads before it finishes), so nothing attaches to a closed record.
        raise ApiError("job", f"Job is not active: {job_id}")
    return f"files/jobs/{job_id}/{secrets.token_hex(12)}/{name}"


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _field(part: BodyPartReader) -> str:
    raw = b""
    while chunk := await part.read_chunk(FIELD_BYTES):
        raw += chunk
        if len(raw) > FIELD_BYTES:
            raise bad_param(str(part.name)[:64], f"is longer than {FIELD_BYTES} bytes")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise bad_param(str(part.name)[:64], "is not valid UTF-8 text") from None


def _spool_path(call: Call) -> Path:
    spool = call.settings.data_dir / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    return spool / f"upload-{secrets.token_hex(8)}"


async def _spool(part: BodyPartReader, path: Path, limit: int) -> None:
    size = 0
    with path.open("xb") as out:
        async for chunk in _part_chunks(part):
            size += len(chunk)
            if size > limit:
                raise FileTooLarge(limit)
            await asyncio.to_thread(out.write, chunk)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, CHUNK):
            yield chunk


async def _receive(call: Call) -> dict[str, Any]:
    """Read the multipart body: fields (bounded in number and size) and the one file `file1`. The file goes
    straight to the store when the credentials came first (as xySat sends them), else through a spool file
    checked against the limit, so an unauthenticated sender never reaches the store."""
    reader = await call.request.multipart()
    fields: dict[str, str] = {}
    key, size, spooled, stored, name = "", 0, None, False, "file"
    limit = call.stores.files.max_file_bytes
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError("api", "Nested multipart bodies are not accepted.")
            if part.name == "file1":
                if key or spooled:
                    raise ApiError("api", "Send one file (field 'file1') per upload.")
                name = stored_name(part.filename or "file")
                if "id" in fields and "auth" in fields:
                    key = await _authorize(call, fields, name)
                    size = await call.stores.files.put_stream(key, _part_chunks(part))
                    stored = True
                else:
                    spooled = _spool_path(call)
                    await _spool(part, spooled, limit)
            elif len(fields) >= MAX_FIELDS:
                raise ApiError("api", f"Too many form fields (at most {MAX_FIELDS}).", status=413)
            else:
                fields[str(part.name or "")[:64]] = await _field(part)
        if not key:
            if spooled is None:
                raise ApiError("api", "Parameter 'file1' is missing (the file, as a multipart file field).")
            key = await _authorize(call, fields, name)
            size = await call.stores.files.put_stream(key, _file_chunks(spooled))
    except BaseException:
        if stored:  # the rest of the body was refused: the upload as a whole did not happen
            await call.stores.files.delete(key)
        raise
    finally:
        if spooled is not None:
            spooled.unlink(missing_ok=True)
    return {"key": key, "size": size}


@HANDLERS.add("upload_job_file", write=True, privilege=NONE, csrf=False, anywhere=True, own_body=True, args=(),
              form=UPLOAD_FIELDS, form_files=("file1",))
async def upload_job_file(call: Call) -> Reply:
    """An agent stores one file of a running job (multipart `file1`, `id`, `auth`, optional `server`); answers the
    storage key (`files/jobs/<job>/<random>/<name>`) and the size. Any node answers it."""
    request = call.request
    if request.content_type != "multipart/form-data":
        raise ApiError("api", "Send the file as multipart/form-data (fields file1, id, auth).", status=415)
    if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        raise ApiError("api", "Compressed request bodies are not accepted; send the body uncompressed.", status=415)
    limit = call.stores.files.max_file_bytes
    if request.content_length is not None and request.content_length > limit + MAX_FIELDS * FIELD_BYTES + 65536:
        raise ApiError("api", f"Upload too large: the limit is {limit} bytes.", status=413)
    try:
        return await _receive(call)
    except FileTooLarge:
        raise ApiError("api", f"Upload too large: the limit is {limit} bytes.", status=413) from None
    except StorageFull as exc:
        raise ApiError("file", f"Failed to store the file: {exc}.", status=507) from None
    except BadPath as exc:
        raise ApiError("api", f"Parameter 'id' cannot name a stored file: {exc}.") from None
    except (ValueError, BadHttpMessage) as exc:  # a malformed multipart body (BadHttpMessage: a part's headers)
        raise ApiError("api", f"Malformed form body: {str(exc)[:200]}") from None
