"""The one handler registry: name, read or write, parameter style and the privilege each call needs."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .params import Param, Validator

if TYPE_CHECKING:
    from aiohttp import web

    from .call import Call

Reply = dict[str, Any]
HandlerFunc = Callable[["Call"], Awaitable["Reply | web.StreamResponse"]]

# Privilege markers besides real privilege names (digest section 2).
NONE = None  # no auth at all
AUTH = "auth"  # any valid session or API key
SESSION = "session"  # a valid user session; API keys refused (the /api/user calls and own-account calls)
ADMIN = "admin"


class Params(enum.Enum):
    """How GET query and POST body combine (digest 1.2)."""

    READ = "read"  # merge(body, query): query wins
    WRITE = "write"  # body only
    RUN = "run"  # query, then body on top


@dataclass(frozen=True, slots=True)
class Handler:
    ns: str
    name: str
    func: HandlerFunc
    write: bool
    privilege: str | None
    params: Params
    args: Validator | None  # the declared parameters, applied before the handler runs
    csrf: bool = True  # a cookie session must send its CSRF token (write calls; see transport)
    doc: str = ""
    # A write any node may answer (agents' uploads and finishes, enrolment): it changes nothing only the primary
    # may change, or hands the change to the primary through Redis.
    anywhere: bool = False
    # The handler reads the request body itself (streamed uploads, bounded by their own limit); the transport
    # reads none, so params hold the query only.
    own_body: bool = False
    # What such a handler reads from a multipart/form-data body: the fields it checks with this validator and the
    # file parts named in `form_files` (the OpenAPI document describes them).
    form: Validator | None = None
    form_files: tuple[str, ...] = ()
    # The handler calls a primary service of the node process (the job dispatcher, internal jobs, maintenance,
    # the action runner's mail): an HTTP worker hands such a call to its node process (api/workers.py).
    service: bool = False


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Handler] = {}

    def add(
        self,
        name: str,
        *,
        write: bool,
        privilege: str | None,
        ns: str = "app",
        params: Params | None = None,
        args: tuple[Param, ...] | None = None,
        closed: bool = False,
        csrf: bool = True,
        anywhere: bool = False,
        own_body: bool = False,
        form: Validator | None = None,
        form_files: tuple[str, ...] = (),
        service: bool = False,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Decorator: declare a handler. Write handlers read the body only unless told otherwise.

        `args` declares every parameter the handler reads (api/params.py); `closed` refuses undeclared keys;
        `csrf=False` only for calls whose credential is not the cookie (login creates one, magic links carry
        their own token); `anywhere=True` lets a satellite answer a write (see Handler.anywhere); `own_body=True` leaves
        the body to the handler (see Handler.own_body), and `form`/`form_files` say what multipart body it reads;
        `service=True` marks a call of the node process's primary services (see Handler.service)."""
        if (form is not None or form_files) and not own_body:
            raise ValueError(f"handler {ns}/{name}: a multipart form is read by an own_body handler only")

        def register(func: HandlerFunc) -> HandlerFunc:
            key = (ns, name)
            if key in self._handlers:
                raise ValueError(f"handler {ns}/{name} declared twice")
            style = params or (Params.WRITE if write else Params.READ)
            validator = Validator(args, closed) if args is not None else None
            doc = " ".join((func.__doc__ or "").strip().split("\n\n")[0].split())
            self._handlers[key] = Handler(ns, name, func, write, privilege, style, validator, csrf, doc, anywhere,
                                          own_body, form, form_files, service)  # fmt: skip
            return func

        return register

    def get(self, ns: str, name: str) -> Handler | None:
        return self._handlers.get((ns, name))

    def merged(self, *others: Registry) -> Registry:
        out = Registry()
        for reg in (self, *others):
            for key, handler in reg._handlers.items():
                if key in out._handlers:
                    raise ValueError(f"handler {key[0]}/{key[1]} declared twice")
                out._handlers[key] = handler
        return out

    def __iter__(self) -> Iterator[Handler]:
        return iter(sorted(self._handlers.values(), key=lambda h: (h.ns, h.name)))

    def __len__(self) -> int:
        return len(self._handlers)


# Every production handler registers here; test-only hooks live in their own registry.
HANDLERS = Registry()
TEST_HANDLERS = Registry()
