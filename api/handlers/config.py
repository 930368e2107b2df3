"""admin_get_config / admin_update_config: this node's effective settings, and the cluster-wide ones an admin may
change at run time.

Podium's settings come from each node's command line and PODIUM_* variables (api/settings.py), fixed for the life
of the process; `admin_get_config` shows them (`config`) with every secret redacted. What may change at run time,
for the whole cluster at once, is the retention limits (cluster/maintenance.py EDITABLE): `admin_update_config`
stores them in Redis (`overrides`), and every maintenance pass of whichever node is primary applies them. xyOps lets
an admin override any configuration path (but secret_key, SSO and Debug) and most apply at once; here a setting that
shapes a running process (ports, the store, the secret key) is changed where the process is started.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cluster.maintenance import EDITABLE
from storage.connection import redacted

from ..activity import log_activity
from ..call import Call
from ..errors import ApiError, bad_param
from ..registry import ADMIN, HANDLERS, Reply

REDACTED = "(redacted)"
def effective(call: Call) -> dict[str, Any]:
    """This node's settings, secrets redacted (a password in the store URL too)."""
    out: dict[str, Any] = {}
    for item in dataclasses.fields(call.settings):
        value = getattr(call.settings, item.name)
        if not item.repr:  # a secret setting is declared repr=False (api/settings.py), so it never shows
            value = REDACTED if value else ""
        elif item.name == "redis_url" and value:
            value = redacted(value)
        elif isinstance(value, Path):
            value = str(value)
        out[item.name] = value
    return out


@HANDLERS.add("admin_get_config", write=False, privilege=ADMIN, args=())
async def admin_get_config(call: Call) -> Reply:
    """`config`: this node's effective settings (secrets redacted); `overrides`: the cluster-wide run-time changes;
    `editable`: what admin_update_config accepts, with each setting's range."""
    overrides = await call.stores.config.overrides()
    config = effective(call)
    config.update({k: v for k, v in overrides.items() if k in EDITABLE})
    editable = {name: {"type": "integer", "min": low, "max": high} for name, (low, high) in EDITABLE.items()}
    return {"config": config, "overrides": overrides, "editable": editable}


@HANDLERS.add("admin_update_config", write=True, privilege=ADMIN, args=())
async def admin_update_config(call: Call) -> Reply:
    """Body of {setting: value} (null: back to the node's own value) for the settings in `editable`; all checked
    before any is stored."""
    changes: dict[str, Any] = dict(call.params)
    if not changes:
        raise ApiError("api", "No configuration changes were given.")
    for name, value in changes.items():
        if name not in EDITABLE:
            raise bad_param(name, "is not a setting that can be changed at run time (see admin_get_config editable)")
        if value is None:
            continue
        low, high = EDITABLE[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise bad_param(name, f"must be an integer between {low} and {high}")
    overrides = await call.stores.config.update(call.node.fence(), changes)
    await log_activity(call, "config_update", "Configuration updated: " + ", ".join(sorted(changes)),
                       config={"changes": changes})  # fmt: skip
    return {"overrides": overrides}
