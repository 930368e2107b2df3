"""`--file-store s3` on real `podium serve` nodes and a real S3-compatible server: a job's uploaded file and its
finished log land in the bucket (not in Redis) and another node serves both; deleting the job empties its keys.
Also the options and variables of the S3 store, and a node refusing to start on a bucket it cannot reach."""

from __future__ import annotations

import argparse
import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli import build_parser, settings_from
from api.settings import ConfigError
from storage.connection import Database, connect
from storage.keyspace import Keyspace
from tests.jobkit import SECRET, Jobs, agent
from tests.servers import Cluster, Node, RedisServer, S3Bucket, S3Server

pytestmark = pytest.mark.timeout(300)


def serve_args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *extra])


def test_options_and_variables() -> None:
    settings = settings_from(serve_args(), {})
    assert settings.s3_config() is None and (settings.s3_bucket, settings.s3_path_style) == ("", False)
    settings = settings_from(
        serve_args("--file-store", "s3", "--s3-bucket", "podium-files", "--s3-endpoint", "http://127.0.0.1:9000",
                   "--s3-path-style", "on"),
        {"PODIUM_S3_REGION": "eu-west-1", "PODIUM_S3_PREFIX": "cluster1/", "PODIUM_S3_BUCKET": "ignored"},
    )  # fmt: skip
    config = settings.s3_config()
    assert config is not None
    assert (config.bucket, config.endpoint, config.region, config.prefix, config.path_style) == (
        "podium-files", "http://127.0.0.1:9000", "eu-west-1", "cluster1/", True)  # fmt: skip
    assert "secret" not in repr(settings).lower().replace("secret_key", "")  # no credential options at all
    for args, env, fragment in (
        (("--file-store", "s3"), {}, "--s3-bucket: required with --file-store s3"),
        (("--file-store", "s3", "--s3-bucket", "Bad_Name"), {}, "--s3-bucket 'Bad_Name'"),
        (("--file-store", "s3"), {"PODIUM_S3_BUCKET": "ok-bucket", "PODIUM_S3_ENDPOINT": "ftp://x"},
         "PODIUM_S3_ENDPOINT='ftp://x'"),
        (("--file-store", "s3", "--s3-bucket", "ok-bucket", "--s3-prefix", "../up"), {}, "--s3-prefix '../up'"),
        (("--file-store", "s3", "--s3-bucket", "ok-bucket", "--s3-region", "Mars 1"), {}, "--s3-region 'Mars 1'"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
            settings_from(serve_args(*args), env)
    # The S3 options mean nothing to another backend and are not checked for it.
    assert settings_from(serve_args("--s3-bucket", "Bad_Name"), {}).file_store == "redis"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


def s3_options(server: S3Server, bucket: str) -> tuple[str, ...]:
    return ("--file-store", "s3", "--s3-endpoint", server.url, "--s3-bucket", bucket, "--s3-prefix", "podium",
            "--s3-path-style", "on")  # fmt: skip


SCRIPT = """#!/bin/sh
echo "log line of $JOB_ID"
printf 'a,b\\n1,2\\n' > out.csv
echo '{"xy":1,"files":["out.csv"]}'
"""


async def test_job_files_and_logs_in_s3_served_by_another_node(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = await S3Bucket(s3_server).create()
    async with Cluster(tmp_path, size=2, extra=("--secret-key", SECRET, *s3_options(s3_server, bucket.name)),
                       env=s3_server.env) as c:  # fmt: skip
        primary = await c.wait_single_primary()
        other = next(n for n in c.nodes if n is not primary)
        await c.wait_all_up()
        jobs = await Jobs.login(c, primary)
        worker = agent(tmp_path, "a", primary.url).start()
        try:
            await jobs.wait_servers(primary, 1)
            job_id = await jobs.run(primary, await jobs.event(primary, SCRIPT))
            done = await jobs.wait_job(primary, job_id)
        finally:
            worker.terminate()
        assert done["code"] == 0, done
        [file] = done["files"]
        path = str(file["path"])
        assert path.startswith(f"files/jobs/{job_id}/") and path.endswith("/out.csv")
        log_key = f"podium/logs/jobs/{job_id}/log.txt.gz"
        assert await bucket.keys() == sorted([log_key, "podium/" + path])
        assert gzip.decompress(await bucket.get(log_key)) == f"log line of {job_id}\n".encode()
        # Nothing of either in Redis.
        db = Database(connect(c.redis.url), Keyspace("podium"))
        try:
            assert await db.client.exists(db.keys.file(path), db.keys.file(f"logs/jobs/{job_id}/log.txt.gz")) == 0
        finally:
            await db.aclose()
        # The other node serves both from the bucket.
        assert c.http is not None
        async with c.http.get(f"{other.url}/{path}", headers=jobs.headers) as resp:
            assert (resp.status, await resp.read()) == (200, b"a,b\n1,2\n")
            assert resp.headers["Content-Type"].startswith("text/csv")
        async with c.http.head(f"{other.url}/{path}", headers=jobs.headers) as resp:
            assert (resp.status, resp.content_length) == (200, 8)
        async with c.http.get(f"{other.url}/{path}x", headers=jobs.headers) as resp:
            assert resp.status == 404
        assert await jobs.log(other, job_id) == f"log line of {job_id}\n"
        # Deleting the job (a primary-only call) deletes its log and files from the bucket.
        await jobs.ok(primary, "delete_job", {"id": job_id})
        await c.wait_for(lambda: _empty(bucket), timeout=30)


async def _empty(bucket: S3Bucket) -> bool:
    return await bucket.keys() == []


async def test_a_node_refuses_to_start_without_its_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    node = Node(0, tmp_path / "node", redis.url, s3_options(s3_server, "podium-no-such-bucket"), env=s3_server.env)
    try:
        node.start()
        assert node.proc is not None
        assert node.proc.wait(60) == 2, node.log_text()
        text = node.log_text()
        assert "--file-store s3: the S3 file store failed to reach bucket 'podium-no-such-bucket'" in text, text
        assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in text
    finally:
        node.terminate()
        redis.stop()
