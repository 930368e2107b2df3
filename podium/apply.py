"""`podium apply DIR`: definitions kept as files under version control, made so on a cluster (events as code).

DIR holds one folder per kind (events/, categories/, plugins/, groups/, tags/, monitors/, alerts/, web_hooks/,
channels/, roles/) with one JSON or YAML file per object; each object needs its `id`. The current objects are
fetched, compared field by field (only the fields a file gives, and never the server's own: created, modified,
revision, username), then missing ones are created and changed ones updated with just the changed fields. Nothing
is deleted unless `prune` is asked for (then objects of a kind with a folder in DIR that no file names). Kinds are
applied in dependency order (what events name first) and pruned in the reverse order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import PodiumError
from .sync import Client

# (folder = plural API name, singular API name), in the order they are applied.
KINDS = (("roles", "role"), ("categories", "category"), ("plugins", "plugin"), ("groups", "group"), ("tags", "tag"),
         ("channels", "channel"), ("web_hooks", "web_hook"), ("monitors", "monitor"), ("alerts", "alert"),
         ("events", "event"))  # fmt: skip
SERVER_FIELDS = frozenset({"id", "created", "modified", "revision", "username"})
SUFFIXES = (".json", ".yaml", ".yml")
MAX_FILE_BYTES = 1024 * 1024
MAX_FILES = 10_000


class ApplyError(ValueError):
    """A definition file that cannot be used (nothing is applied then)."""


@dataclass(frozen=True, slots=True)
class Wanted:
    kind: str  # plural
    path: Path
    obj: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.obj["id"])


@dataclass(slots=True)
class Step:
    kind: str  # singular
    id: str
    action: str  # create | update | unchanged | delete | failed
    fields: list[str] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "id": self.id, "action": self.action}
        if self.fields:
            out["fields"] = self.fields
        if self.error:
            out["error"] = self.error
        return out


def _read(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ApplyError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    text = path.read_text(encoding="utf-8")
    try:
        obj = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApplyError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(obj, dict):
        raise ApplyError(f"{path}: must hold one object (a mapping)")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        raise ApplyError(f"{path}: needs an `id` (a string)")
    return obj


def load(root: Path) -> dict[str, list[Wanted]]:
    """The objects of every kind folder in `root` (a kind without a folder is absent); ApplyError on any bad file,
    an unknown folder or an id given twice."""
    if not root.is_dir():
        raise ApplyError(f"{root}: not a directory")
    known = {plural for plural, _ in KINDS}
    out: dict[str, list[Wanted]] = {}
    count = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in known:
            raise ApplyError(f"{folder}: unknown kind (one of {', '.join(sorted(known))})")
        items: list[Wanted] = []
        seen: dict[str, Path] = {}
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES):
            count += 1
            if count > MAX_FILES:
                raise ApplyError(f"{root}: more than {MAX_FILES} definition files")
            item = Wanted(folder.name, path, _read(path))
            if item.id in seen:
                raise ApplyError(f"{path}: id {item.id} is also in {seen[item.id]}")
            seen[item.id] = path
            items.append(item)
        out[folder.name] = items
    return out


def changed_fields(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The fields the file gives that differ from the server's object (server-managed fields aside)."""
    return sorted(k for k, v in wanted.items() if k not in SERVER_FIELDS and current.get(k) != v)


def plan(client: Client, wanted: dict[str, list[Wanted]], *, prune: bool = False) -> list[tuple[Step, Any]]:
    """(step, the object to send) for every object, in the order to run them."""
    steps: list[tuple[Step, Any]] = []
    pruned: list[tuple[Step, Any]] = []
    for plural, singular in KINDS:
        if plural not in wanted:
            continue
        rows = client.call(f"get_{plural}", {}).get("rows") or []
        current = {str(r.get("id")): r for r in rows if isinstance(r, dict)}
        for item in wanted[plural]:
            have = current.get(item.id)
            if have is None:
                steps.append((Step(singular, item.id, "create"), item.obj))
                continue
            fields = changed_fields(have, item.obj)
            if fields:
                steps.append((Step(singular, item.id, "update", fields),
                              {"id": item.id, **{k: item.obj[k] for k in fields}}))  # fmt: skip
            else:
                steps.append((Step(singular, item.id, "unchanged"), None))
        if prune:
            named = {item.id for item in wanted[plural]}
            pruned = [(Step(singular, i, "delete"), {"id": i}) for i in current if i not in named] + pruned
    return steps + pruned


def run(client: Client, steps: Sequence[tuple[Step, Any]]) -> None:
    """Make each planned change; a refused one is marked `failed` with the server's reason, the rest go on."""
    for step, body in steps:
        if step.action not in ("create", "update", "delete"):
            continue
        try:
            client.call(f"{step.action}_{step.kind}", body)
        except PodiumError as exc:
            step.error = f"{exc.code}: {exc.message}"
            step.fields = []
            step.action = "failed"
