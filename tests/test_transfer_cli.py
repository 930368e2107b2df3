"""`podium apply DIR`, `podium export FILE` and `podium import FILE` end to end against a real node process."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.jobkit import SECRET, Jobs
from tests.servers import Cluster, Node
from tests.test_cli import clean_env, run_cli

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Jobs, Node, str]]:
    """One real node (no agent) and an admin API key for the CLI."""
    c = Cluster(tmp_path, size=1, extra=("--secret-key", SECRET), env={"PODIUM_AGENT": "off"})
    async with c:
        await c.wait_all_up()
        primary = await c.wait_single_primary()
        jobs = await Jobs.login(c, primary)
        key = str((await jobs.ok(primary, "create_api_key", {"title": "cli", "privileges": {"admin": True}}))
                  ["plain_key"])  # fmt: skip
        yield jobs, primary, key


async def cli(node: Node, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(PODIUM_URL=node.url, PODIUM_API_KEY=key)
    return await asyncio.to_thread(run_cli, *args, env=env)


def _steps(done: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], str]:
    assert done.stdout, done.stderr
    return {(s["kind"], s["id"]): s["action"] for s in json.loads(done.stdout)["steps"]}


def write_tree(root: Path) -> None:
    (root / "categories").mkdir(parents=True)
    (root / "events").mkdir()
    (root / "tags").mkdir()
    (root / "categories" / "reports.yaml").write_text("id: reports\ntitle: Reports\ncolor: green\n")
    (root / "tags" / "weekly.json").write_text(json.dumps({"id": "weekly", "title": "Weekly"}))
    (root / "events" / "weekly_report.yaml").write_text(
        "id: weekly_report\ntitle: Weekly report\nenabled: true\ncategory: reports\nplugin: shellplug\n"
        "targets: [main]\ntags: [weekly]\nparams:\n  script: |\n    #!/bin/sh\n    echo report\n"
    )


async def test_apply_creates_then_updates_then_reports_unchanged(node: tuple[Jobs, Node, str], tmp_path: Path) -> None:
    jobs, primary, key = node
    root = tmp_path / "defs"
    write_tree(root)

    dry = await cli(primary, key, "apply", str(root), "--dry-run", "--json")
    assert dry.returncode == 0, (dry.stdout, dry.stderr)
    assert _steps(dry) == {("category", "reports"): "create", ("tag", "weekly"): "create",
                           ("event", "weekly_report"): "create"}  # fmt: skip
    _, reply = await jobs.call(primary, "get_event", {"id": "weekly_report"})
    assert reply["code"] == "notfound", reply  # a dry run writes nothing

    done = await cli(primary, key, "apply", str(root), "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert set(_steps(done).values()) == {"create"}
    event = (await jobs.ok(primary, "get_event", {"id": "weekly_report"}))["event"]
    assert (event["category"], event["tags"], event["params"]["script"]) == ("reports", ["weekly"],
                                                                             "#!/bin/sh\necho report\n")  # fmt: skip

    again = await cli(primary, key, "apply", str(root), "--json")
    assert again.returncode == 0 and set(_steps(again).values()) == {"unchanged"}, again.stdout

    # One changed field is one update of that field; the table names it.
    (root / "categories" / "reports.yaml").write_text("id: reports\ntitle: Reports\ncolor: blue\n")
    changed = await cli(primary, key, "apply", str(root))
    assert changed.returncode == 0, changed.stderr
    assert [line.split() for line in changed.stdout.splitlines() if "reports" in line] == [
        ["update", "category", "reports", "color"]]
    assert (await jobs.ok(primary, "get_category", {"id": "reports"}))["category"]["color"] == "blue"

    # --prune deletes what no file names (only in the kinds DIR has); a refused call makes the exit code 1.
    (root / "tags" / "weekly.json").unlink()
    pruned = await cli(primary, key, "apply", str(root), "--prune", "--dry-run", "--json")
    assert {k: v for k, v in _steps(pruned).items() if v == "delete"} == {
        ("tag", "important"): "delete", ("tag", "flag"): "delete", ("tag", "weekly"): "delete",
        ("category", "general"): "delete"}
    (root / "events" / "broken.json").write_text(json.dumps({"id": "broken", "title": "x", "enabled": True,
                                                             "category": "nope"}))  # fmt: skip
    failed = await cli(primary, key, "apply", str(root), "--json")
    assert failed.returncode == 1 and _steps(failed)[("event", "broken")] == "failed", failed.stdout
    (root / "events" / "bad.yaml").write_text("title: no id\n")
    bad = await cli(primary, key, "apply", str(root))
    assert bad.returncode == 2 and "needs an `id`" in bad.stderr


async def test_export_then_import_dry_run(node: tuple[Jobs, Node, str], tmp_path: Path) -> None:
    jobs, primary, key = node
    await jobs.ok(primary, "create_secret", {"id": "tok", "title": "Token",
                                             "fields": [{"name": "T", "value": "v"}]})  # fmt: skip
    out = tmp_path / "export.txt.gz"
    done = await cli(primary, key, "export", str(out), "--secret-key", "pass-1")
    assert done.returncode == 0, done.stderr
    lines: list[Any] = [json.loads(t) for t in gzip.decompress(out.read_bytes()).decode().splitlines()
                        if t.startswith("{")]  # fmt: skip
    assert {"key": "global/secrets/0"}.items() <= next(x for x in lines if x.get("key") == "global/secrets/0").items()
    assert any(x.get("key") == "secrets/tok" and x["value"]["alg"] == "aes-256-gcm" for x in lines)

    dry = await cli(primary, key, "import", str(out), "--dry-run", "--secret-key", "pass-1", "--json")
    assert dry.returncode == 0, (dry.stdout, dry.stderr)
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["created"] == 0 and report["updated"] == 0 and report["unchanged"] > 5, report
