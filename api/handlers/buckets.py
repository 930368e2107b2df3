"""Storage buckets (digest 3.17, facts §10): a definition (title, icon, notes) plus data and files kept apart.

The record goes through the generic CRUD (api/definitions.py); a bucket's `data` (a JSON object) and `files`
(File objects) live in storage/buckets.py, written per bucket with a compare-and-set, so a job's store action and
these calls never lose each other's change. Reads need any valid session or key; writes create_buckets,
edit_buckets, delete_buckets. Bucket files are stored at `files/bucket/<bucket id>/<random>/<name>`.
"""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Any

from storage.buckets import BUCKETS, BucketError, BucketNotFound, Incoming, files_prefix
from storage.errors import Conflict

from .. import params as P
from ..call import Call
from ..definitions import FamilySpec, Field, Record, loosely_equal, register_family
from ..errors import ApiError, bad_param
from ..registry import HANDLERS, Params, Reply
from ..uploads import UploadLimits, receive_upload

DATA_BYTES = 1024 * 1024  # encoded size of the data a call may send (the store bounds the merged data too)
BUCKET_ID = P.text("id", required=True, max_len=P.ID_LEN, pattern=r"[a-z0-9_]+", doc="the bucket's id")
DATA = P.obj("data", max_bytes=DATA_BYTES, doc="a JSON object")
# What delete_bucket_file may match on (every one given must match). ⚠ xyOps takes every other parameter as a
# criterion, credentials included; here only File fields, and an unknown one is refused rather than ignored.
CRITERIA = (P.text("filename", max_len=P.TITLE_LEN), P.text("path", max_len=512), P.integer("date", ge=0),
            P.integer("size", ge=0), P.text("username", max_len=P.ID_LEN), P.text("job", max_len=P.ID_LEN),
            P.text("server", max_len=P.ID_LEN))  # fmt: skip


def _failure(exc: BucketError) -> ApiError:
    return ApiError("bucket", str(exc))


async def _create_contents(call: Call, record: Record, current: Record | None) -> Reply | None:
    """The bucket's data is written before its record (the script refuses if the id is taken), so a bucket is
    never visible without it. ⚠ xyOps also takes a client's `files` list verbatim, and later deletes whatever
    paths it names; here files come only from uploads and store actions, and a given `files` is ignored."""
    buckets = call.stores.buckets
    try:
        await buckets.create(call.node.fence(), str(record["id"]), call.params.get("data") or {})
    except Conflict:
        raise ApiError("bucket", f"That Bucket ID already exists: {record['id']}") from None
    except BucketError as exc:
        raise bad_param("data", str(exc)) from None
    return None


async def _replace_data(call: Call, record: Record, current: Record | None) -> None:
    """update_bucket with `data` replaces it (as xyOps; write_bucket_data merges). A given `files` is ignored."""
    if call.params.get("data") is None:
        return
    try:
        await call.stores.buckets.replace_data(call.node.fence(), str(record["id"]), call.params["data"])
    except BucketNotFound as exc:
        raise _failure(exc) from None
    except BucketError as exc:
        raise bad_param("data", str(exc)) from None


async def _drop_contents(call: Call, record: Record, current: Record | None) -> None:
    """After the record is gone (a post-commit step, like a deleted job's output): its data, then its files."""
    with contextlib.suppress(Conflict):  # a bucket of the same id was created meanwhile: its contents are its own
        await call.stores.buckets.drop(call.node.fence(), str(record["id"]))


async def _describe(call: Call, record: Record) -> Reply:
    contents = await call.stores.buckets.get(str(record["id"]))
    return {"data": contents.data, "files": contents.files}


BUCKET_SPEC = FamilySpec(
    family=BUCKETS,
    singular="bucket",
    plural="buckets",
    prefix="b",
    create="create_buckets",
    edit="edit_buckets",
    delete="delete_buckets",
    fields=(
        Field("title", "title", required=True),
        Field("enabled", "bool", default=True),
        Field("icon", "icon", default=""),
        Field("notes", "text", default=""),
    ),
    write_args=(DATA, P.anything("files", doc="ignored: a bucket's files come from uploads and store actions only")),
    before_create=_create_contents,
    before_update=_replace_data,
    after_delete=_drop_contents,
    describe=_describe,
)

buckets = register_family(BUCKET_SPEC)


async def _existing(call: Call, bucket_id: str) -> Record:
    found = await call.stores.defs.get(BUCKETS, bucket_id)
    if found is None:
        raise ApiError("bucket", f"Bucket not found: {bucket_id}")
    return found


@HANDLERS.add("write_bucket_data", write=True, privilege="edit_buckets", params=Params.RUN,
              args=(BUCKET_ID, DATA, P.flag("fetch", False, doc="answer the merged data")))  # fmt: skip
async def write_bucket_data(call: Call) -> Reply:
    """Shallow-merge `data` into the bucket's data (its top-level keys win); many writers at once are safe."""
    bucket_id = call.params["id"]
    await _existing(call, bucket_id)
    try:
        merged = await call.stores.buckets.merge_data(call.node.fence(), bucket_id, call.params.get("data") or {})
    except BucketNotFound as exc:
        raise _failure(exc) from None
    except BucketError as exc:
        raise ApiError("bucket", f"Failed to store data in bucket: {exc}") from None
    return {"data": merged if call.params["fetch"] else None}


@HANDLERS.add("delete_bucket_file", write=True, privilege="edit_buckets", params=Params.RUN, closed=True,
              args=(BUCKET_ID, *CRITERIA))  # fmt: skip
async def delete_bucket_file(call: Call) -> Reply:
    """Delete the first listed file matching every criterion given (`filename`, `path`, `size`, ...)."""
    bucket_id = call.params["id"]
    criteria = {p.name: call.params[p.name] for p in CRITERIA if call.params.get(p.name) not in (None, "")}
    if not criteria:
        raise ApiError("bucket", "No criteria specified to locate file.")
    await _existing(call, bucket_id)

    def match(file: Record) -> bool:
        return all(k in file and loosely_equal(file[k], v) for k, v in criteria.items())

    try:
        removed = await call.stores.buckets.remove_file(call.node.fence(), bucket_id, match)
    except BucketError as exc:
        raise _failure(exc) from None
    if removed is None:
        raise ApiError("bucket", f"Failed to delete bucket file: Bucket file not found: {json.dumps(criteria)}")
    return {}


@HANDLERS.add("empty_bucket", write=True, privilege="edit_buckets", params=Params.RUN,
              args=(BUCKET_ID, P.flag("files", False, doc="delete every file"),
                    P.flag("data", False, doc="reset the data to {}")))  # fmt: skip
async def empty_bucket(call: Call) -> Reply:
    bucket_id, files, data = call.params["id"], call.params["files"], call.params["data"]
    if not files and not data:
        raise ApiError("bucket", "Please specify files and/or data to empty from bucket.")
    await _existing(call, bucket_id)
    try:
        await call.stores.buckets.empty(call.node.fence(), bucket_id, data=data, files=files)
    except BucketError as exc:
        raise _failure(exc) from None
    return {}


UPLOAD_IDS = (P.text("id", max_len=P.ID_LEN, pattern=r"\w+", doc="the bucket's id"),
              P.text("bucket", max_len=P.ID_LEN, pattern=r"\w+", doc="the bucket's id (xyOps' alias of `id`)"))
UPLOAD_FORM = P.Validator(UPLOAD_IDS)


@HANDLERS.add("upload_bucket_files", write=True, privilege="edit_buckets", own_body=True, params=Params.RUN,
              args=UPLOAD_IDS,
              form=UPLOAD_FORM, form_files=("file1",))  # fmt: skip
async def upload_bucket_files(call: Call) -> Reply:
    """Multipart files into a bucket (any part names; the bucket in the query or a form field, `bucket` or `id`).
    A file named like a listed one replaces it in place (its path, a stable link, stays); a new one is stored at
    `files/bucket/<id>/<random>/<name>`. The bucket's limits (files per bucket, bytes per file) apply on top of the
    node's upload limits; a refused request keeps none of its files. Answers the bucket's full file list."""
    buckets = call.stores.buckets
    chosen: list[str] = []

    async def prefix_of(fields: dict[str, Any]) -> str:
        given = UPLOAD_FORM({k: v for k, v in fields.items() if k in ("id", "bucket")})
        bucket_id = given.get("bucket") or given.get("id")
        if not bucket_id:
            raise ApiError("api", "Missing parameter: id")
        await _existing(call, bucket_id)
        chosen.append(bucket_id)
        return files_prefix(bucket_id).rstrip("/")

    prefix: Any = prefix_of
    in_query = call.params.get("bucket") or call.params.get("id")
    if in_query:  # known before the body: the files stream straight to the store
        prefix = await prefix_of({"id": in_query})
    limits = UploadLimits.of(call).lowered(file_bytes=buckets.max_file_bytes, files=buckets.max_files)
    _, uploaded = await receive_upload(call, prefix=prefix, limits=limits)
    if not uploaded:
        raise ApiError("bucket", "No file upload data found in request.")
    bucket_id = chosen[0]
    username = call.who.username
    incoming = [Incoming(str(f["filename"]), functools.partial(call.stores.files.read, str(f["path"])),
                         {"username": username}, stored=str(f["path"]), size=int(f["size"])) for f in uploaded]
    try:
        files = await buckets.put_files(call.node.fence(), bucket_id, incoming)
    except BucketError as exc:
        raise _failure(exc) from None
    return {"files": files}
