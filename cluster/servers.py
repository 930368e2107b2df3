"""Server (agent) rules, pure functions: group assignment, what a join stores, keywords, summaries.

An agent's `hello` is untrusted input from the network: every string in it is cut to a bound, and its
`info` object is copied within a byte budget (depth, items and string lengths capped), so one agent cannot
store megabytes per hello however it is built.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from storage.servers import FACETS, facets, valid_server_id

from .patterns import hostname_matches

Record = dict[str, Any]

HOSTNAME_LEN = 255
IP_LEN = 64
TITLE_LEN = 256
ICON_LEN = 64
GROUP_ID_LEN = 128
MAX_GROUPS = 100
INFO_BYTES = 32 * 1024  # about what xySat's basic info takes is 2-4 KiB
INFO_DEPTH = 6
INFO_ITEMS = 256  # keys of one object, items of one array
INFO_STRING = 1024
INFO_KEY = 128
INT_LIMIT = 2**53
INITIAL_FIELDS = ("title", "enabled", "icon", "groups")
# Kept from the stored record on a rejoin, xyOps' `addServer`: everything but what the agent reports afresh.
REPORTED = frozenset({"info", "hostname", "ip", "socket_id"})
_INFO_SECTIONS = ("os", "memory", "cpu", "virt", "features", "monitors", "deltas")

_HOSTNAME_DROP = re.compile(r"[^a-z0-9._-]+")
_IP_KEEP = re.compile(r"[^0-9A-Za-z.:%_-]+")
_ICON = re.compile(r"^[\w-]{1,64}$")
_TAGS = re.compile(r"[<>]")


class HelloError(ValueError):
    """A hello that cannot make a server record; `field` names the part that is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"hello {field} {problem}")
        self.field = field
        self.problem = problem


def clean_hostname(value: Any) -> str:
    """A host name as xyOps keeps it (lower case, no `/` or other odd characters), at most 255 characters."""
    text = _HOSTNAME_DROP.sub("", str(value or "")[: HOSTNAME_LEN * 4].lower())[:HOSTNAME_LEN]
    if not text:
        raise HelloError("hostname", "is missing or has no usable characters")
    return text


def clean_ip(value: Any) -> str:
    return _IP_KEEP.sub("", str(value or "")[: IP_LEN * 4])[:IP_LEN]


def clean_title(value: Any) -> str:
    return _TAGS.sub("", str(value or ""))[:TITLE_LEN]


def clean_icon(value: Any) -> str:
    text = str(value or "")
    return text if _ICON.fullmatch(text) else ""


def clean_group_ids(value: Any) -> list[str]:
    """Distinct group ids of a list (or one CSV string), at most MAX_GROUPS; anything else is dropped."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    out: dict[str, None] = {}
    for item in items:
        if isinstance(item, str) and item.strip() and len(item.strip()) <= GROUP_ID_LEN:
            out[item.strip()] = None
        if len(out) >= MAX_GROUPS:
            break
    return list(out)


class _Budget:
    def __init__(self, size: int) -> None:
        self.left = size


_CUT = object()  # the budget ran out: stop copying this container


def _scalar(value: Any, budget: _Budget) -> Any:
    if value is None or isinstance(value, bool):
        budget.left -= 4
        return value
    if isinstance(value, int):
        budget.left -= 8
        return value if -INT_LIMIT <= value <= INT_LIMIT else float(value)
    if isinstance(value, float):
        budget.left -= 8
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        data = value[:INFO_STRING].encode(errors="replace")
        budget.left -= len(data) + 2
        return data.decode()
    return None  # not a JSON value


def _copy_map(value: Mapping[Any, Any], depth: int, budget: _Budget) -> Record:
    out: Record = {}
    for n, (key, item) in enumerate(value.items()):
        if n >= INFO_ITEMS:
            break
        if not isinstance(key, str):
            continue
        name = key[:INFO_KEY].encode(errors="replace")
        budget.left -= len(name) + 2
        copied = _copy(item, depth + 1, budget)
        if copied is _CUT or budget.left < 0:
            break
        out[name.decode()] = copied
    return out


def _copy(value: Any, depth: int, budget: _Budget) -> Any:
    if budget.left <= 0:
        return _CUT
    if isinstance(value, Mapping):
        return _copy_map(value, depth, budget) if depth < INFO_DEPTH else {}
    if isinstance(value, list | tuple):
        items: list[Any] = []
        for item in value[:INFO_ITEMS] if depth < INFO_DEPTH else ():
            copied = _copy(item, depth + 1, budget)
            if copied is _CUT or budget.left < 0:
                break
            items.append(copied)
        return items
    return _scalar(value, budget)


def bounded_info(value: Any, size: int = INFO_BYTES) -> Record:
    """A copy of an agent's `info` within `size` bytes (roughly, as msgpack): what does not fit is left out,
    whole keys at a time; deeper than INFO_DEPTH levels becomes empty."""
    if not isinstance(value, Mapping):
        return {}
    copied = _copy(value, 0, _Budget(size))
    return copied if isinstance(copied, dict) else {}


def auto_groups(hostname: str, groups: Iterable[Mapping[str, Any]]) -> list[str]:
    """Ids of every group whose `hostname_match` matches the host name (JavaScript semantics, unanchored,
    on RE2; a pattern that cannot compile, or a hostile one, matches nothing), in the groups' order."""
    out: list[str] = []
    for group in groups:
        pattern = group.get("hostname_match")
        group_id = str(group.get("id") or "")
        if group_id and isinstance(pattern, str) and hostname_matches(pattern, hostname):
            out.append(group_id)
    return out


def regroup(
    hostname: str, auto: bool, manual: Sequence[str], groups: Sequence[Mapping[str, Any]]
) -> tuple[bool, list[str]]:
    """(autoGroup, groups) of a server: automatic from the host name, or its manual groups pruned of groups that
    no longer exist; a manual list left empty goes back to automatic (xyOps' addServer/updateServerGroups)."""
    if not auto:
        known = {str(g.get("id")) for g in groups}
        kept = [g for g in dict.fromkeys(manual) if g in known][:MAX_GROUPS]
        if kept:
            return False, kept
    return True, auto_groups(hostname, groups)


def regrouped(record: Mapping[str, Any], groups: Sequence[Mapping[str, Any]], now: float) -> Record | None:
    """A stored server's record after the groups changed: its groups re-derived by regroup (automatic ones from
    the host name, manual ones pruned of deleted groups), `modified` and keywords renewed; None when its
    groups stay as they are."""
    auto, ids = regroup(str(record.get("hostname") or ""), bool(record.get("autoGroup", True)),
                        clean_group_ids(record.get("groups")), groups)  # fmt: skip
    if auto == record.get("autoGroup") and ids == record.get("groups"):
        return None
    updated: Record = {**record, "autoGroup": auto, "groups": ids, "modified": int(now)}
    updated["keywords"] = keywords(updated)
    return updated


def cpu_combo(cpu: Mapping[str, Any]) -> str:
    """The "manufacturer brand" label xyOps shows (and indexes as cpu_brand)."""
    maker = cpu.get("manufacturer")
    if maker in ("-", "unknown"):
        maker = cpu.get("vendor")
    return f"{maker or cpu.get('vendor') or 'Unknown'} {cpu.get('brand') or ''}".strip()[:INFO_STRING]


def keywords(record: Mapping[str, Any]) -> str:
    """The CSV xyOps indexes as `keywords`: hostname, ip, groups, os, cpu, virt and title."""
    info = record.get("info") or {}

    def part(section: str, key: str) -> str:
        found = (info.get(section) or {}).get(key) if isinstance(info.get(section), Mapping) else None
        return str(found) if found not in (None, "") else "unknown"

    fields = [
        str(record.get("hostname") or ""), str(record.get("ip") or ""), ",".join(record.get("groups") or []),
        part("os", "platform"), part("os", "distro"), part("os", "release"), part("os", "arch"),
        part("cpu", "manufacturer"), part("cpu", "brand"),
        part("virt", "vendor"), part("virt", "type"), part("virt", "location"),
        str(record.get("title") or "unknown"),
    ]  # fmt: skip
    return ",".join(fields)


def _initial(hello: Mapping[str, Any]) -> Record:
    """What a bootstrap config pre-set for a new server: `initial` (as enrolment hands it out) with the same
    keys at the top of the hello on top (xySat merges its `initial` config into the hello)."""
    nested = hello.get("initial")
    merged: Record = dict(nested) if isinstance(nested, Mapping) else {}
    merged.update({k: hello[k] for k in INITIAL_FIELDS if k in hello})
    return merged


def merge_join(
    stored: Mapping[str, Any] | None, hello: Mapping[str, Any], now: float, groups: Sequence[Mapping[str, Any]],
    *, ip: str | None = None,
) -> Record:  # fmt: skip
    """The record a joining agent gets (xyOps `addServer`). Known server: its stored fields stay, except what the
    agent reports (info, hostname, ip). New server: created now, enabled, title/icon/groups from `initial`, and
    automatic groups unless it brought some. Groups are then re-derived (see regroup), `modified` is now and
    the keywords are rebuilt. `ip` is the socket's address (else the hello's). HelloError for a hello that
    names no valid id or host name."""
    server_id = hello.get("id")
    if not valid_server_id(server_id):
        raise HelloError("id", "must be 1-32 characters of a-z, 0-9 and _")
    hostname = clean_hostname(hello.get("hostname"))
    info = bounded_info(hello.get("info"))
    for section in _INFO_SECTIONS:
        if not isinstance(info.get(section), dict):
            info[section] = {}
    info["cpu"]["combo"] = cpu_combo(info["cpu"])
    address = clean_ip(ip if ip is not None else hello.get("ip") or info.get("ip"))
    if stored is not None:
        record: Record = {k: v for k, v in stored.items() if k not in REPORTED}
        auto, manual = bool(record.get("autoGroup", True)), clean_group_ids(record.get("groups"))
    else:
        initial = _initial(hello)
        enabled = initial.get("enabled", True)
        # xyOps sets enabled=true even when the bootstrap config says otherwise; a config that asks for a
        # disabled server gets one here.
        record = {"created": int(now), "enabled": enabled if isinstance(enabled, bool) else True,
                  "title": clean_title(initial.get("title")), "icon": clean_icon(initial.get("icon")),
                  "userData": {}}  # fmt: skip
        manual = clean_group_ids(initial.get("groups"))
        auto = not manual
    record.update(id=str(server_id), hostname=hostname, ip=address, info=info)
    record["autoGroup"], record["groups"] = regroup(hostname, auto, manual, groups)
    record["modified"] = int(now)
    record["keywords"] = keywords(record)
    return record


def summaries(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """`get_server_summaries`: for each facet (os_platform, os_distro, os_release, os_arch, cpu_virt, cpu_brand,
    cpu_cores) how many servers have each value, in the form the search index takes (see storage.servers)."""
    out: dict[str, dict[str, int]] = {name: {} for name in FACETS}
    for record in records:
        for name, value in facets(record).items():
            if value:
                out[name][value] = out[name].get(value, 0) + 1
    return out
