"""The network sockets of the jobs' processes, with the bytes each has moved (what xySat reads from `ss -nutipaO`).

On Linux: each job process's open file descriptors name its socket inodes (`/proc/<pid>/fd`; one older than 5 s
that held none is looked at again every 5 s, so a socket it opens later shows within that), and one netlink
sock_diag dump per family and protocol gives every TCP and UDP socket with its addresses, state and inode, and
for TCP the bytes acknowledged and received (`tcp_info`). No subprocess, and nothing at all is dumped when no
job process holds a socket. Elsewhere psutil lists the connections, without byte counts.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from collections.abc import Iterator, Mapping

import psutil

from .metrics import Proc, Socket

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_INET_DIAG_INFO = 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_REQUEST = struct.Struct("=BBBxI48x")  # inet_diag_req_v2: family, protocol, ext, states, an empty sockid
# inet_diag_msg: family, state, timer, retrans, ports, addresses, (interface, cookie), expires, queues, uid, inode
_MESSAGE = struct.Struct("=BBBB2s2s16s16s12xIIIII")
_ATTR = struct.Struct("=HH")
_TCP_BYTES = struct.Struct("=QQ")  # tcp_info: tcpi_bytes_acked, tcpi_bytes_received
_TCP_BYTES_AT = 120
# As `ss` names them, with xySat's two renames (ESTAB, UNCONN).
_STATES = {1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2", 6: "TIME-WAIT",
           7: "UNCONNECTED", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING", 12: "SYN-RECV"}  # fmt: skip
QUERIES = ((socket.AF_INET, socket.IPPROTO_TCP), (socket.AF_INET6, socket.IPPROTO_TCP),
            (socket.AF_INET, socket.IPPROTO_UDP), (socket.AF_INET6, socket.IPPROTO_UDP))  # fmt: skip
PSUTIL_STATES = {psutil.CONN_ESTABLISHED: "ESTABLISHED", psutil.CONN_SYN_SENT: "SYN-SENT",
                  psutil.CONN_SYN_RECV: "SYN-RECV", psutil.CONN_FIN_WAIT1: "FIN-WAIT-1",
                  psutil.CONN_FIN_WAIT2: "FIN-WAIT-2", psutil.CONN_TIME_WAIT: "TIME-WAIT",
                  psutil.CONN_CLOSE: "UNCONNECTED", psutil.CONN_CLOSE_WAIT: "CLOSE-WAIT",
                  psutil.CONN_LAST_ACK: "LAST-ACK", psutil.CONN_LISTEN: "LISTEN",
                  psutil.CONN_CLOSING: "CLOSING"}  # fmt: skip
MAX_FDS = 10_000  # descriptors looked at per process
RESCAN = 5  # s between looks at the descriptors of a process that held no socket
MAX_SOCKETS = 100_000  # sockets read from one dump


def address(family: int, raw: bytes, port: int) -> str:
    """`ss -n`'s form: 10.0.0.1:80, [::1]:80, and * for port 0."""
    shown = str(port) if port else "*"
    if family == socket.AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, raw[:4])}:{shown}"
    return f"[{socket.inet_ntop(socket.AF_INET6, raw[:16])}]:{shown}"


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets a process holds open (Linux)."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)[:MAX_FDS]
    except OSError:  # ended, or not ours to look into
        return set()
    out = set()
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def parse_dump(data: bytes, protocol: int) -> Iterator[tuple[int, Socket] | None]:
    """The sockets in netlink messages as (inode, Socket) with pid 0; None once the dump is complete."""
    kind = "tcp" if protocol == socket.IPPROTO_TCP else "udp"
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return
        body, end = offset + _HEADER.size, offset + length
        offset += (length + 3) & ~3
        if msg_type == _NLMSG_DONE:
            yield None
            return
        if msg_type == _NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, body)[0] if end - body >= 4 else errno.EIO
            raise OSError(code, os.strerror(code))
        if msg_type != _SOCK_DIAG_BY_FAMILY or end - body < _MESSAGE.size:
            continue
        family, state, _t, _r, sport, dport, src, dst, _e, _rq, _wq, _uid, inode = _MESSAGE.unpack_from(data, body)
        acked = received = 0
        at = body + _MESSAGE.size
        while at + _ATTR.size <= end:
            attr_len, attr_type = _ATTR.unpack_from(data, at)
            if attr_len < _ATTR.size:
                break
            if attr_type == _INET_DIAG_INFO and attr_len - _ATTR.size >= _TCP_BYTES_AT + _TCP_BYTES.size:
                acked, received = _TCP_BYTES.unpack_from(data, at + _ATTR.size + _TCP_BYTES_AT)
            at += (attr_len + 3) & ~3
        yield inode, Socket(type=kind, state=_STATES.get(state, "UNKNOWN"),
                            local_addr=address(family, src, int.from_bytes(sport, "big")),
                            remote_addr=address(family, dst, int.from_bytes(dport, "big")), pid=0,
                            bytes=acked + received, sent=acked, received=received)  # fmt: skip


class SocketReader:
    """Reads the sockets of a set of processes, once a second. A process's descriptors are looked at every second
    while it is young (RESCAN s) or holds sockets, and every RESCAN seconds otherwise (in turn, not all in the same
    second): with a thousand jobs that hold none, a tick does not read ten thousand links."""

    def __init__(self) -> None:
        self.netlink = sys.platform.startswith("linux")
        self._held: dict[int, set[int]] = {}  # pid -> its socket inodes when last looked at
        self._turn = 0

    def read(self, procs: Mapping[int, Proc], now: float) -> list[Socket]:
        """The sockets of these processes (as read at `now`)."""
        if not procs:
            self._held = {}
            return []
        if self.netlink:
            try:
                return self._linux(procs, now)
            except OSError:  # no sock_diag here (a sandbox, an old kernel): psutil from now on
                self.netlink = False
        return self._psutil(list(procs))

    def _inodes(self, procs: Mapping[int, Proc], now: float) -> dict[int, int]:
        """inode -> pid of the processes' sockets."""
        self._turn += 1
        held: dict[int, set[int]] = {}
        out: dict[int, int] = {}
        for pid, proc in procs.items():
            known = self._held.get(pid)
            if known is None or known or now - proc.created < RESCAN or (pid + self._turn) % RESCAN == 0:
                known = socket_inodes(pid)
            held[pid] = known
            for inode in known:
                out.setdefault(inode, pid)
        self._held = held
        return out

    def _linux(self, procs: Mapping[int, Proc], now: float) -> list[Socket]:
        inodes = self._inodes(procs, now)
        if not inodes:
            return []
        out: list[Socket] = []
        for family, protocol in QUERIES:
            try:
                found = dump(family, protocol)
            except OSError:
                if protocol == socket.IPPROTO_UDP:  # udp_diag not loaded: TCP still counts
                    continue
                raise
            for inode, sock in found:
                pid = inodes.get(inode) if inode else None
                if pid is not None:
                    out.append(Socket(sock.type, sock.state, sock.local_addr, sock.remote_addr, pid, sock.bytes))
        return out

    @staticmethod
    def _psutil(pids: list[int]) -> list[Socket]:
        wanted = set(pids)
        try:
            conns = psutil.net_connections("inet")
        except (psutil.Error, OSError):
            return []
        out = []
        for conn in conns:
            if conn.pid is None or conn.pid not in wanted:
                continue
            tcp = conn.type == socket.SOCK_STREAM
            state = PSUTIL_STATES.get(conn.status, "UNKNOWN") if tcp else "UNCONNECTED"
            out.append(Socket("tcp" if tcp else "udp", state, pair(conn.laddr), pair(conn.raddr), conn.pid))
        return out


def dump(family: int, protocol: int) -> list[tuple[int, Socket]]:
    """One sock_diag dump (its own netlink socket, so a dump cut short leaves nothing behind for the next)."""
    ext = 1 << (_INET_DIAG_INFO - 1) if protocol == socket.IPPROTO_TCP else 0
    body = _REQUEST.pack(family, protocol, ext, 0xFFFFFFFF)
    found: list[tuple[int, Socket]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(1.0)
        sock.send(_HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
                  + body)  # fmt: skip
        while len(found) < MAX_SOCKETS:
            for item in parse_dump(sock.recv(256 * 1024), protocol):
                if item is None:
                    return found
                found.append(item)
    return found


def pair(addr: object) -> str:
    if not isinstance(addr, tuple) or len(addr) < 2:
        return "*:*"
    host, port = str(addr[0]), int(addr[1])
    return f"[{host}]:{port or '*'}" if ":" in host else f"{host}:{port or '*'}"
