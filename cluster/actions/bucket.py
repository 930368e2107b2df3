"""The `store` and `fetch` job actions (xyOps runJobAction_store / runJobAction_fetch).

`store` (normally on a completion condition) copies the job's output files whose `filename` matches
`bucket_glob` into the bucket, streamed through the file store (a listed file of the same name is replaced in
place), then shallow-merges the job's output data into the bucket's data. `fetch` (normally on `start`, before
the job launches) gives the job the bucket's data, shallow-merged into `input.data` (an array as
`input.data.items`), and the bucket's matching files in `input.files`, flagged `bucket: <id>` so deleting the job
never deletes them. Both change one bucket at a time through storage/buckets.py, so they are safe to repeat
(REPEATABLE in perform.py): a second store merges the same data and replaces the same files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from storage.buckets import BUCKETS, BucketError, Incoming
from storage.files import BadPath, FileTooLarge, StorageFull

from .record import Change
from .result import Outcome

if TYPE_CHECKING:
    from ..node import NodeRuntime

Record = dict[str, Any]
Result = tuple[Outcome, Change | None]
SYNC = ("data", "files", "data_and_files")
MAX_GLOB = 256  # characters of a `bucket_glob`
MAX_ALTERNATIVES = 64  # patterns a glob's {a,b} groups may expand to
_FAILURES = (BucketError, FileTooLarge, StorageFull, BadPath)


# -- globs ------------------------------------------------------------------------------------------------------
# picomatch-like, on one file name: `*` any run of characters but `/`, `?` one character but `/`, `[abc]`,
# `[a-z]`, `[!x]`/`[^x]` a class, `{a,b}` alternatives; everything else literal. Matching is linear in the name
# (one backtrack point per `*`), so no pattern can be made to take long.
_STAR = ("*",)
Token = tuple[Any, ...]


def _expand(pattern: str) -> list[str]:
    """`{a,b}` alternatives (nested ones too) as separate patterns, at most MAX_ALTERNATIVES."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth, parts, last = 0, [], start + 1
    for i in range(start, len(pattern)):
        ch = pattern[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                parts.append(pattern[last:i])
                head, tail = pattern[:start], pattern[i + 1:]
                out: list[str] = []
                for part in parts:
                    for expanded in _expand(head + part + tail):
                        out.append(expanded)
                        if len(out) > MAX_ALTERNATIVES:
                            raise ValueError(f"expands to more than {MAX_ALTERNATIVES} patterns")
                return out
        elif ch == "," and depth == 1:
            parts.append(pattern[last:i])
            last = i + 1
    return [pattern]  # an unclosed brace is literal


def _tokens(segment: str) -> list[Token]:
    out: list[Token] = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            if not out or out[-1] is not _STAR:  # `**` within a name is one `*`
                out.append(_STAR)
        elif ch == "?":
            out.append(("?",))
        elif ch == "[" and (end := segment.find("]", i + 2)) > 0:
            body = segment[i + 1:end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            ranges = []
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    ranges.append((body[j], body[j + 2]))
                    j += 3
                else:
                    ranges.append((body[j], body[j]))
                    j += 1
            out.append(("[", negate, tuple(ranges)))
            i = end
        elif ch == "\\" and i + 1 < len(segment):
            i += 1
            out.append(("=", segment[i]))
        else:
            out.append(("=", ch))
        i += 1
    return out


def _one(token: Token, ch: str) -> bool:
    if token[0] == "=":
        return bool(token[1] == ch)
    if token[0] == "?":
        return True
    inside = any(low <= ch <= high for low, high in token[2])
    return inside is not bool(token[1])


def _match_segment(tokens: list[Token], text: str) -> bool:
    t = i = 0
    star_t, star_i = -1, 0
    while i < len(text):
        if t < len(tokens) and tokens[t] is _STAR:
            star_t, star_i = t, i
            t += 1
        elif t < len(tokens) and _one(tokens[t], text[i]):
            t += 1
            i += 1
        elif star_t >= 0:
            star_i += 1
            i, t = star_i, star_t + 1
        else:
            return False
    while t < len(tokens) and tokens[t] is _STAR:
        t += 1
    return t == len(tokens)


def compile_glob(pattern: str) -> list[list[list[Token]]]:
    """A glob as its alternatives, each a list of `/`-separated segments of tokens. ValueError if too long."""
    if len(pattern) > MAX_GLOB:
        raise ValueError(f"is longer than {MAX_GLOB} characters")
    return [[_tokens(seg) for seg in alt.split("/")] for alt in _expand(pattern)]


def glob_match(compiled: list[list[list[Token]]], name: str) -> bool:
    """Whether `name` matches (segments matched one to one: `*` never crosses a `/`)."""
    parts = name.split("/")
    return any(len(alt) == len(parts) and all(_match_segment(seg, part) for seg, part in zip(alt, parts, strict=True))
               for alt in compiled)  # fmt: skip


# -- the actions ------------------------------------------------------------------------------------------------
def _settings(action: Mapping[str, Any]) -> tuple[str, str, str]:
    bucket_id = str(action.get("bucket_id") or "")
    sync = str(action.get("bucket_sync") or "data_and_files")
    glob = str(action.get("bucket_glob") or "*")
    return bucket_id, sync if sync in SYNC else "data_and_files", glob


def _file_name(file: Mapping[str, Any]) -> str:
    return str(file.get("filename") or os.path.basename(str(file.get("path") or "")))


async def _bucket_or_refusal(node: NodeRuntime, bucket_id: str, glob: str) -> tuple[Any, Outcome | None]:
    if await node.stores.defs.get(BUCKETS, bucket_id) is None:
        return None, Outcome(code="bucket", description=f"Bucket not found: {bucket_id}")
    try:
        return compile_glob(glob), None
    except ValueError as exc:
        return None, Outcome(code="bucket", description=f"Invalid bucket glob pattern: {exc}")


async def store(node: NodeRuntime, run: Mapping[str, Any], job: Mapping[str, Any]) -> Result:
    """The job's output files (by glob) and data into the bucket. Files go first, so a file refused by a limit
    leaves the bucket's data unchanged too (⚠ xyOps writes the data first and keeps it on a file failure)."""
    bucket_id, sync, glob = _settings(run["action"])
    matcher, refused = await _bucket_or_refusal(node, bucket_id, glob)
    if refused is not None:
        return refused, None
    stores, fence = node.stores, node.fence()
    details: list[str] = []
    try:
        if "files" in sync:
            details.append(f"- Including job files with glob pattern: `{glob}`")
            listed = [f for f in job.get("files") or [] if isinstance(f, Mapping) and isinstance(f.get("path"), str)]
            chosen = [f for f in listed if glob_match(matcher, _file_name(f))]
            incoming = []
            for file in chosen:
                path = str(file["path"])
                if await stores.files.stat(path) is None:
                    details.append(f"- Skipped `{_file_name(file)}`: its stored file is gone.")
                    continue
                incoming.append(Incoming(_file_name(file), functools.partial(stores.files.read, path),
                                         {"job": str(job.get("id")), "server": str(job.get("server") or "")}))
            if incoming:
                await stores.buckets.put_files(fence, bucket_id, incoming)
                details += [f"- Stored file: `{item.name}`" for item in incoming]
            else:
                details.append("- No job files matched.")
        if "data" in sync:
            data = job.get("data") if isinstance(job.get("data"), Mapping) else {}
            await stores.buckets.merge_data(fence, bucket_id, data or {})
            details.append(f"- Merged {len(data or {})} data keys into the bucket.")
    except _FAILURES as exc:
        return Outcome(code="bucket", description=f"Failed to store in bucket: {exc}", details="\n".join(details)), None
    what = sync.replace("_", " ")
    return Outcome(description=f"Successfully stored {what} in bucket.", details="\n".join(details)), None


async def fetch(node: NodeRuntime, run: Mapping[str, Any], job: Mapping[str, Any]) -> Result:
    """The bucket's data and matching files into the job's input (applied to the job with the result, so a
    start action's fetch is in the input the agent receives at launch)."""
    bucket_id, sync, glob = _settings(run["action"])
    matcher, refused = await _bucket_or_refusal(node, bucket_id, glob)
    if refused is not None:
        return refused, None
    contents = await node.stores.buckets.get(bucket_id)
    details: list[str] = []
    files: list[Record] = []
    if "files" in sync:
        details.append(f"- Including bucket files with glob pattern: `{glob}`")
        files = [{**f, "bucket": bucket_id} for f in contents.files if glob_match(matcher, _file_name(f))]
        details += [f"- Fetched file: `{_file_name(f)}`" for f in files] or ["- No bucket files matched."]
    data: Any = contents.data if "data" in sync else None
    if data is not None:
        details.append(f"- Merged {len(data)} data keys into the job input.")

    def apply(target: Record) -> None:
        given = target.get("input") if isinstance(target.get("input"), dict) else {}
        job_input: Record = dict(given or {})
        merged: Record = dict(job_input["data"]) if isinstance(job_input.get("data"), dict) else {}
        if isinstance(data, list):  # a bucket whose data is an array (xyOps lets a client write one)
            merged["items"] = data
        elif isinstance(data, dict):
            merged.update(data)
        have = [f for f in job_input.get("files") or [] if isinstance(f, Mapping)]
        paths = {f["path"] for f in files}
        job_input.update(data=merged, files=[*(f for f in have if f.get("path") not in paths), *files])
        target["input"] = job_input

    what = sync.replace("_", " ")
    return Outcome(description=f"Successfully fetched {what} from bucket.", details="\n".join(details)), apply
