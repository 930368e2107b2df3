"""Client: the same calls as AsyncClient for code without an event loop (it runs one of its own)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .client import AsyncClient, JobEvent

T = TypeVar("T")


class Client:
    """Blocking calls; takes AsyncClient's arguments. Not for use inside a running event loop."""

    def __init__(self, urls: str | Sequence[str], **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self.aio = AsyncClient(urls, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def _run(self, step: Awaitable[T]) -> T:
        return self._loop.run_until_complete(step)

    @property
    def primary(self) -> str | None:
        return self.aio.primary

    @property
    def last_node(self) -> str:
        return self.aio.last_node

    def call(self, name: str, params: Mapping[str, Any] | None = None, *, ns: str = "app",
             retry: bool | None = None) -> dict[str, Any]:  # fmt: skip
        return self._run(self.aio.call(name, params, ns=ns, retry=retry))

    def download(self, name: str, params: Mapping[str, Any], dest: Path) -> int:
        return self._run(self.aio.download(name, params, dest))

    def upload(self, name: str, path: Path, fields: Mapping[str, str] | None = None) -> dict[str, Any]:
        return self._run(self.aio.upload(name, path, fields))

    def login(self) -> None:
        self._run(self.aio.login())

    def health(self, url: str) -> dict[str, Any] | None:
        return self._run(self.aio.health(url))

    def stream_job(self, job_id: str, offset: int = 0) -> Iterator[JobEvent]:
        events = self.aio.stream_job(job_id, offset)
        step: asyncio.Task[JobEvent] | None = None

        async def following() -> JobEvent:
            return await events.__anext__()

        try:
            while True:
                step = self._loop.create_task(following())
                try:
                    yield self._run(step)
                except StopAsyncIteration:
                    return
        finally:
            # Interrupted (Ctrl-C) while waiting: the pending step is cancelled before the stream is closed, since
            # a generator still running cannot be closed.
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(BaseException):
                    self._run(step)
            with contextlib.suppress(RuntimeError):
                self._run(events.aclose())

    def close(self) -> None:
        if not self._loop.is_closed():
            self._run(self.aio.close())
            self._loop.close()
