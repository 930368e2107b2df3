"""The client commands that move data: `podium export FILE`, `podium import FILE [--dry-run]` and
`podium apply DIR [--dry-run] [--prune]`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import apply as applying
from .output import paint, table
from .sync import Client

SECRET_ENV = "PODIUM_TRANSFER_SECRET"  # the export's passphrase, when not given as --secret-key


def transfer_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    export = sub.add_parser("export", parents=[common],
                            help="download an export of the cluster's data (gzip'd NDJSON, xyOps format)")  # fmt: skip
    export.add_argument("file", help="where to write it ('.txt.gz' by convention)")
    export.add_argument("--lists", default="all", help='comma list of lists (events, users, ...) or "all" (default)')
    export.add_argument("--indexes", default="all",
                        help='comma list of database indexes (jobs, tickets, alerts, activity) or "all" (default); '
                             '"none" for none')  # fmt: skip
    export.add_argument("--secret-key", metavar="PASSPHRASE", default=os.environ.get(SECRET_ENV),
                        help=f"seal secret values with this passphrase (xyOps' secret_key); else they are left out "
                             f"(default ${SECRET_ENV}: an environment variable stays out of ps and shell history)")
    imp = sub.add_parser("import", parents=[common], help="import an export file (xyOps format, may be gzip'd)")
    imp.add_argument("file")
    imp.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    imp.add_argument("--secret-key", metavar="PASSPHRASE", default=os.environ.get(SECRET_ENV),
                     help=f"the passphrase the export's secrets are sealed with (default ${SECRET_ENV})")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    app = sub.add_parser("apply", parents=[common],
                         help="make the definitions in DIR so (one folder per kind, one JSON/YAML file per object)")
    app.add_argument("dir")
    app.add_argument("--dry-run", action="store_true", help="list what would be created, updated or deleted")
    app.add_argument("--prune", action="store_true", help="delete objects of a kind in DIR that no file names")
    app.add_argument("--json", action="store_true", help="JSON output for scripts")


def _selector(text: str) -> Any:
    if text == "all":
        return "all"
    if text in ("", "none"):
        return []
    return [w.strip() for w in text.split(",") if w.strip()]


def _export(client: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"lists": _selector(args.lists), "indexes": _selector(args.indexes)}
    if args.secret_key:
        params["secret_key"] = args.secret_key
    written = client.download("admin_export_data", params, Path(args.file))
    print(f"wrote {written} bytes to {args.file}", file=sys.stderr)
    lists = params["lists"]
    if not args.secret_key and (lists == "all" or "secrets" in lists):
        print("note: secret values are not in the export (give --secret-key to include them)", file=sys.stderr)
    return 0


def _import(client: Client, args: argparse.Namespace) -> int:
    fields = {"dry_run": "1"} if args.dry_run else {}
    if args.secret_key:
        fields["secret_key"] = args.secret_key
    report = client.upload("admin_import_data", Path(args.file), fields)["report"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        counts = ("lines", "records", "keys", "commands", "created", "updated", "unchanged", "skipped")
        print(("dry run: " if report.get("dry_run") else "") + ", ".join(f"{k} {report.get(k, 0)}" for k in counts))
        for change in report.get("changes") or []:
            print(f"  {change['action']:<9} {change['kind']} {change['id']}")
        for text in report.get("warnings") or []:
            print(f"warning: {text}", file=sys.stderr)
        for text in report.get("errors") or []:
            print(f"error: {text}", file=sys.stderr)
    return 1 if report.get("errors") else 0


_COLOURS = {"create": "green", "update": "yellow", "delete": "red", "failed": "red", "unchanged": "dim"}


def _apply(client: Client, args: argparse.Namespace) -> int:
    try:
        wanted = applying.load(Path(args.dir))
    except applying.ApplyError as exc:
        print(f"podium: error: {exc}", file=sys.stderr)
        return 2
    steps = applying.plan(client, wanted, prune=args.prune)
    if not args.dry_run:
        applying.run(client, steps)
    rows = [s.as_dict() for s, _ in steps]
    if args.json:
        print(json.dumps({"dry_run": bool(args.dry_run), "steps": rows}, indent=2))
    elif rows:
        table(["ACTION", "KIND", "ID", "DETAIL"],
              [[paint(r["action"], _COLOURS.get(r["action"], "dim"), sys.stdout), r["kind"], r["id"],
                r.get("error") or ", ".join(r.get("fields") or [])] for r in rows])  # fmt: skip
    else:
        print("nothing to apply")
    return 1 if any(r["action"] == "failed" for r in rows) else 0


TRANSFER_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "export": _export, "import": _import, "apply": _apply,
}
