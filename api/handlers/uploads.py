"""User uploads and job files (digest 3.17, 3.2): upload_files, upload_job_input_files, delete_job_file.

Every upload goes through api/uploads.py. ⚠ xyOps stores user uploads at `files/<username>/<name>` (no random
part, so the same name overwrites and a username can collide with other prefixes such as `jobs`); Podium stores
them at `files/users/<username>/<random>/<name>`. The random segment is what keeps such a file private: GET
/files serves `files/users/...` to any authenticated caller (api/files.py), as xyOps serves it to anyone.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any

from storage.files import BadPath, check_path
from storage.stores import job_files_prefix, job_input_uploads

from ..activity import log_activity
from ..call import Call
from ..errors import ApiError, bad_param
from ..files import OWNER_RULES
from ..params import ID_LEN, ident, text
from ..principal import Principal
from ..registry import AUTH, HANDLERS, Reply
from ..uploads import File, base_name, display_name, receive_upload
from .jobcontrol import _rewrite_final
from .jobs import _job, _light

NO_FILES = "No file upload data found in request."
MAX_INPUT_FILES = 1000  # what an agent downloads for one job at most
_SHARED_ROOTS = ("files/bucket/", "files/tickets/", "files/jobs/")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_FILE_TAGS = ("username", "bucket", "ticket", "job", "server")  # File keys kept from a client's entry


def user_prefix(who: Principal) -> str:
    """Where a caller's own uploads live: `files/users/<username>` (API keys by their id, as activity names them).
    A username a stored path cannot hold (non-ASCII letters, a leading dot) is named by `+` and its hash instead:
    usernames never hold `+`, so this names no other user."""
    name = who.username
    if not _PATH_SEGMENT.fullmatch(name):
        name = "+" + hashlib.sha256(name.encode()).hexdigest()[:32]
    return f"files/users/{name}"


def _origin(call: Call) -> str:
    """The base of the URLs upload_files answers: --base-url, else the origin the caller used."""
    return call.settings.base_url.rstrip("/") or str(call.request.url.origin())


async def _user_upload(call: Call) -> list[File]:
    _, files = await receive_upload(call, prefix=user_prefix(call.who))
    if not files:
        raise ApiError("file", NO_FILES)
    return files


@HANDLERS.add("upload_files", write=True, privilege=AUTH, own_body=True, args=(), form_files=("file1",))
async def upload_files(call: Call) -> Reply:
    """Store the caller's files (any multipart file fields); answers a URL for each, in order."""
    files = await _user_upload(call)
    base = _origin(call)
    return {"urls": [f"{base}/{f['path']}" for f in files]}


@HANDLERS.add("upload_job_input_files", write=True, privilege="run_jobs", own_body=True, args=(),
              form_files=("file1",))  # fmt: skip
async def upload_job_input_files(call: Call) -> Reply:
    """Store files to pass to a job: answers File objects for run_event's `input.files`."""
    return {"files": await _user_upload(call)}


# -- delete_job_file ----------------------------------------------------------------------------------------


def _without(files: Any, path: str) -> tuple[list[Any], dict[str, Any] | None]:
    """`files` without the entry whose path is `path`, and that entry (None when there is none)."""
    entries = [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    for i, entry in enumerate(entries):
        if entry.get("path") == path:
            return entries[:i] + entries[i + 1 :], entry
    return entries, None


def _protected(entry: dict[str, Any]) -> str:
    """Why an input file must outlive its job ('' when it need not): it belongs to a bucket or a ticket."""
    path = str(entry.get("path") or "")
    if entry.get("bucket") or path.startswith("files/bucket/"):
        return "Bucket"
    if entry.get("ticket") or path.startswith("files/tickets/"):
        return "Ticket"
    return ""


@HANDLERS.add("delete_job_file", write=True, privilege="delete_jobs",
              args=(ident(), text("path", required=True, max_len=512)))  # fmt: skip
async def delete_job_file(call: Call) -> Reply:
    """Remove one file from a completed job (its output files or its input files) and delete it from the
    store. Bucket and ticket files passed to the job as input stay: they are not the job's to delete."""
    job = await _job(call, call.params["id"])
    if job.get("state") != "complete":
        raise ApiError("job", f"Job is still active: {job['id']}")
    path = call.params["path"]
    removed: list[dict[str, Any]] = []
    owned: list[bool] = []

    def change(current: dict[str, Any]) -> dict[str, Any]:
        files, entry = _without(current.get("files"), path)
        if entry is not None:
            removed[:], owned[:] = [entry], [path.startswith(job_files_prefix(str(job["id"])))]
            return {"files": files}
        given = current.get("input")
        source: dict[str, Any] = given if isinstance(given, dict) else {}
        inputs, entry = _without(source.get("files"), path)
        if entry is None:
            raise ApiError("job", f"Job file not found: {path}")
        kind = _protected(entry)
        if kind:
            raise ApiError("job", f"{kind} files cannot be deleted from job: {entry.get('filename') or path}")
        removed[:], owned[:] = [entry], [bool(job_input_uploads({**current, "input": {"files": [entry]}}))]
        return {"input": {**source, "files": inputs}}

    await _rewrite_final(call, job, change)
    # Only a file the job owns is deleted (its output, an upload it was the first given); an entry naming anything
    # else (another job's output passed on as input, an upload shared with other runs) just leaves the list.
    # ⚠ xyOps deletes whatever the entry names.
    if owned[0] and path.startswith("files/jobs/"):
        await call.stores.files.delete(path)
    elif owned[0]:
        await call.stores.drop_upload(path)
    await log_activity(call, "job_delete_file", f"Deleted file {path} of job {job['id']}", job=_light(job),
                       file=removed[0])  # fmt: skip
    return {}


# -- input files a client names -----------------------------------------------------------------------------


async def _may_use(call: Call, who: Principal | None, path: str) -> bool:
    """May this caller hand the stored file at `path` to a job? Its own uploads, and bucket, ticket and job
    files it may read (GET /files' owner rules); nobody else's uploads. A magic link (no caller) only bucket
    files."""
    if who is not None and path.startswith(user_prefix(who) + "/"):
        return True
    if not path.startswith(_SHARED_ROOTS):
        return False
    if who is None:
        return path.startswith("files/bucket/")
    parts = path.split("/")
    rule = OWNER_RULES.get(parts[1])
    return who.is_admin or (rule is not None and await rule(call.stores, who, parts))


async def checked_input_files(call: Call, files: Any) -> list[File]:
    """A client's `input.files` for a new job, checked and rebuilt: each entry must name an existing stored file
    the caller may use (see _may_use), since the agent downloads it and deleting the job deletes it.
    ⚠ xyOps takes the array as given, so a client could make a job expose or delete any storage key."""
    if not isinstance(files, list):
        raise bad_param("input.files", "must be an array of File objects")
    if len(files) > MAX_INPUT_FILES:
        raise bad_param("input.files", f"may list at most {MAX_INPUT_FILES} files")
    out: list[File] = []
    for i, entry in enumerate(files):
        where = f"input.files[{i}]"
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path:
            raise bad_param(where, "must be a File object with a path")
        try:
            check_path(path)
        except BadPath:
            raise bad_param(f"{where}.path", "is not a stored file path") from None
        if not await _may_use(call, call.user, path):
            raise ApiError("access", f"Job input file is not yours to use: {path}")
        info = await call.stores.files.stat(path)
        if info is None:
            raise ApiError("api", f"Job input file not found: {path}")
        date = entry.get("date")
        record: File = {"id": str(entry.get("id") or "f" + secrets.token_hex(8))[:ID_LEN],
                        "date": int(date) if isinstance(date, int | float) else int(time.time()),
                        "filename": display_name(str(entry.get("filename") or base_name(path))) or base_name(path),
                        "path": path, "size": int(info["size"])}  # fmt: skip
        for tag in _FILE_TAGS:
            value = entry.get(tag)
            if isinstance(value, str | bool) and value != "":
                record[tag] = value[:ID_LEN] if isinstance(value, str) else value
        if path.startswith("files/users/") and await call.stores.claim_upload(path):
            record["owned"] = True  # the first job given this upload: it goes with the job (job_input_uploads)
        out.append(record)
    return out
