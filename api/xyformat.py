"""The xyOps data export format (docs/api.md, admin_export_data / admin_import_data): pure code, no I/O.

An export is gzip'd NDJSON. Lines starting with `#` are comments (a header, then one per section) and blank lines
are skipped. Every other line is one JSON object:

- `{"index": INDEX, "id": ID, "record": {...}}`: a database record (jobs, alerts (invocations), tickets, activity, ...);
- `{"key": STORAGE_KEY, "value": ...}`: a storage key: `users/<name>`, `secrets/<id>`, `buckets/<id>/data`, or a
  list: its header `global/NAME` ({type: "list", length, page_size, first_page, last_page}) and its pages
  `global/NAME/<n>` ({type: "list_page", items: [...]});
- `{"cmd": NAME, "args": [...]}`: a storage command; an exported list is preceded by `listDelete [KEY, false]`.

Secrets travel in xyOps' own scheme: AES-256-GCM under scrypt(passphrase, salt, 32, N=16384, r=8, p=1), the secret
id as associated data and the JSON array of {name, value} as plaintext, each field base64.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

Record = dict[str, Any]
PAGE_SIZE = 50  # xyOps' list page size
# The commands xyOps' import runs (anything else is refused there too).
COMMANDS = frozenset({
    "put", "copy", "rename", "delete", "listCreate", "listPush", "listUnshift", "listCopy", "listRename", "listDelete",
    "hashCreate", "hashPut", "hashUpdate", "hashCopy", "hashRename", "hashDelete", "hashDeleteAll",
})  # fmt: skip
SECRET_ALG = "aes-256-gcm"


class FormatError(ValueError):
    """A line that is not in the export format (its text never holds a secret value)."""


def header(title: str = "xyOps Data Export v1.0") -> str:
    """The file header xyOps writes (readers skip it)."""
    return (f"# {title}\n# Hostname: {socket.gethostname()}\n"
            f"# Date/Time: {time.strftime('%a %b %d %Y %H:%M:%S %z')}\n# Format: NDJSON\n")  # fmt: skip


def line(obj: Record) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"


def user_key(username: str) -> str:
    """The storage key of a user record: `users/` + the name lower-cased with non-word characters removed."""
    return "users/" + re.sub(r"\W+", "", username.lower())


def list_lines(key: str, items: Sequence[Record], page_size: int = PAGE_SIZE) -> Iterator[str]:
    """An exported list: the listDelete command, its header, then its pages."""
    pages = [list(items[i : i + page_size]) for i in range(0, len(items), page_size)] or [[]]
    yield line({"cmd": "listDelete", "args": [key, False]})
    yield line({"key": key, "value": {"type": "list", "length": len(items), "page_size": page_size,
                                      "first_page": 0, "last_page": len(pages) - 1}})  # fmt: skip
    for n, page in enumerate(pages):
        yield line({"key": f"{key}/{n}", "value": {"type": "list_page", "items": page}})


# -- secrets ---------------------------------------------------------------------------------------------------


def _kdf(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=16384, r=8, p=1).derive(passphrase.encode())


def seal_secret(variables: list[dict[str, str]], passphrase: str, secret_id: str) -> Record:
    """A `secrets/<id>` value in the xyOps scheme."""
    salt, iv = os.urandom(16), os.urandom(12)
    plain = json.dumps(variables, separators=(",", ":")).encode()
    sealed = AESGCM(_kdf(passphrase, salt)).encrypt(iv, plain, secret_id.encode())
    ct, tag = sealed[:-16], sealed[-16:]
    return {"v": 1, "alg": SECRET_ALG, "salt": _b64(salt), "iv": _b64(iv), "tag": _b64(tag), "ct": _b64(ct)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def open_secret(value: Any, passphrase: str, secret_id: str) -> list[dict[str, str]]:
    """The [{name, value}] of a `secrets/<id>` value; FormatError if it is malformed or the passphrase is wrong."""
    if not isinstance(value, dict) or value.get("alg") != SECRET_ALG:
        raise FormatError(f"secret {secret_id}: not an {SECRET_ALG} record")
    try:
        salt, iv, tag, ct = (base64.b64decode(str(value[f]), validate=True) for f in ("salt", "iv", "tag", "ct"))
    except (KeyError, ValueError):
        raise FormatError(f"secret {secret_id}: salt, iv, tag and ct must be base64") from None
    if len(iv) != 12 or len(tag) != 16:
        raise FormatError(f"secret {secret_id}: iv must be 12 bytes and tag 16")
    try:
        plain = AESGCM(_kdf(passphrase, salt)).decrypt(iv, ct + tag, secret_id.encode())
    except InvalidTag:
        raise FormatError(f"secret {secret_id}: cannot be decrypted (wrong secret_key, or altered)") from None
    try:
        found = json.loads(plain)
    except ValueError:
        found = None
    if not isinstance(found, list):
        raise FormatError(f"secret {secret_id}: the decrypted data is not a list of variables")
    return found


# -- reading ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One data line: its 1-based number in the file and its object."""

    number: int
    obj: Record


MAX_LINE = 8 * 1024 * 1024  # characters in one line; a longer one is an error line


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def rows(text: str, *, report_error: Callable[[int, str], None] | None = None) -> Iterator[Row]:
    """The data lines of an export; a line that is not a JSON object goes to `report_error(number, message)`.
    Lines end at "\n" only (a trailing "\r" is dropped): JSON strings may hold U+2028, \x1c and the like."""

    def bad(number: int, message: str) -> None:
        if report_error is not None:
            report_error(number, message)

    start, number, end = 0, 0, len(text)
    while start < end:
        stop = text.find("\n", start)
        if stop < 0:
            stop = end
        number += 1
        length = stop - start
        raw = text[start:stop] if length <= MAX_LINE else ""
        start = stop + 1
        if length > MAX_LINE:
            bad(number, f"longer than {MAX_LINE} characters")
            continue
        stripped = raw.strip(" \t\r")
        if not stripped or stripped.startswith("#"):
            continue
        try:
            obj = json.loads(stripped, parse_constant=_no_constant, parse_float=_finite)
        except json.JSONDecodeError as exc:
            bad(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except ValueError as exc:
            bad(number, f"not valid JSON ({str(exc)[:80]})")
            continue
        except RecursionError:
            bad(number, "not valid JSON (nested too deeply)")
            continue
        if not isinstance(obj, dict):
            bad(number, "not a JSON object")
            continue
        yield Row(number, obj)
