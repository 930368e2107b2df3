"""The baseline for bench_api: a bare aiohttp app with one GET route answering {"code":0}.

Run as `python -m tests.bench.bare_app --port N`; it listens on loopback only and has no access log.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aiohttp import web

# The same path as Podium's ping, so both targets receive byte-identical requests.
PATH = "/api/app/ping/v1"


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"code": 0})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get(PATH, ping)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bare aiohttp hello-world server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
