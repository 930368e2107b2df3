"""The machine's figures in the field names and units of xySat's ServerMonitorData and `quickmon` (execution
reference 2.1, xyOps docs/data.md "ServerMonitorData"): bytes, percents 0..100, cumulative counters.

One reader per figure, shared by the minute sample and the second one: `memory()` (/proc/meminfo on Linux, every
`\\w+` key lowercased without its `Mem` prefix, `used` = total - available as Node's os.freemem() has it),
`CpuLoad` (the time split between two reads, per cpu and in total), `disk_totals()` (/proc/diskstats without
partitions and virtual devices, as xySat counts them), `net_counters()` (per interface; the non-loopback ones
add up to `stats.network` and to quickmon's `net`). `HostData` builds ServerMonitorData from them and from
hostprocs.py (processes, connections); `QuickData` the per-second payload. Both run in a thread (blocking reads).

Differences from xySat, on purpose: the first sample after start measures cpu and rates since the agent started
(xySat's first is all zeros); `memory.swapused`, `processes.blocked` and `stats.uptime_sec` are added; `docker`
and `graphics` are not collected; a process's `cpu` is over the last interval with 100 = one core (see
hostprocs.py). Mounts are local filesystems with a size, keyed as xySat keys them (`/` -> `root`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .hostprocs import ConnTable, ProcessList

LINUX = sys.platform.startswith("linux")
MAX_MOUNTS = 100
MAX_INTERFACES = 256
_MEMINFO_LINE = re.compile(r"^\s*(\w+):\s*(.+)$")
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
          "t": 1024**4, "tb": 1024**4}  # fmt: skip
# Devices xySat leaves out of the disk totals: virtual or stacked ones, and partitions of counted disks.
_NOT_A_DISK = re.compile(
    r"^(dm-\d+|md\d+|loop\d+|ram\d+|zram\d+|sr\d+|fd\d+|nvme\d+n\d+p\d+|mmcblk\d+p\d+"
    r"|(sd[a-z]+|vd[a-z]+|xvd[a-z]+|hd[a-z]+)\d+)$", re.IGNORECASE)  # fmt: skip
# Filesystems that hold no files of their own (or not on this machine): not mounts to watch (as `df -l`).
_PSEUDO_FS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "cgroup", "cgroup2", "securityfs", "pstore", "debugfs",
    "tracefs", "mqueue", "hugetlbfs", "configfs", "fusectl", "bpf", "autofs", "binfmt_misc", "rpc_pipefs", "nsfs",
    "squashfs", "efivarfs", "selinuxfs", "devfs", "fdescfs", "nullfs", "procfs", "linprocfs", "none", "nfs", "nfs4",
    "cifs", "smbfs", "smb3", "fuse.sshfs", "sshfs", "afs", "ceph", "glusterfs", "fuse.gvfsd-fuse", "fuse.portal",
})  # fmt: skip
_NODE_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64", "i386": "ia32",
              "i686": "ia32", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64", "s390x": "s390x"}  # fmt: skip
_MAKERS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon", "CentaurHauls": "VIA"}


def node_arch() -> str:
    """The architecture as Node's os.arch() names it (x64, arm64, ...), as xySat reports it."""
    machine = platform.machine()
    return _NODE_ARCH.get(machine.lower(), machine.lower())


def node_platform() -> str:
    """As Node's os.platform(): linux, darwin, freebsd, win32, ..."""
    return "win32" if sys.platform.startswith("win") else re.sub(r"\d+$", "", sys.platform)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def bytes_from_text(text: str) -> int:
    """`15873932 kB` -> bytes (pixl-tools getBytesFromText: 1024-based units); a bare number as it is."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", text)
    if not match:
        return 0
    return int(float(match.group(1)) * _UNITS.get(match.group(2).lower(), 1))


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as xySat keys it: `MemAvailable` -> `available`, `SwapTotal` -> `swaptotal`, in bytes
    (lines whose key is not a plain word, such as `Active(anon)`, are left out)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        match = _MEMINFO_LINE.match(line)
        if match:
            out[re.sub(r"^Mem", "", match.group(1)).lower()] = bytes_from_text(match.group(2))
    return out


def memory() -> dict[str, int]:
    """The memory figures of ServerMonitorData `memory` and quickmon `mem`: at least total, free, used, available,
    buffers, cached, swaptotal, swapfree, swapused (bytes)."""
    if LINUX and (info := parse_meminfo(_read("/proc/meminfo"))).get("total"):
        info.setdefault("available", info.get("free", 0) + info.get("buffers", 0))
        info["used"] = max(0, info["total"] - info["available"])  # Node's os.freemem() is MemAvailable
    else:
        vm = psutil.virtual_memory()
        info = {"total": vm.total, "free": vm.free, "available": vm.available, "used": max(0, vm.total - vm.available)}
        for key in ("active", "inactive", "buffers", "cached", "wired", "shared"):
            if isinstance(value := getattr(vm, key, None), int):
                info[key] = value
        info.setdefault("buffers", 0)
        info.setdefault("cached", 0)
        swap = psutil.swap_memory()
        info.update(swaptotal=swap.total, swapfree=swap.free)
    info.setdefault("swaptotal", 0)
    info.setdefault("swapfree", 0)
    info["swapused"] = max(0, info["swaptotal"] - info["swapfree"])
    return info


_SPLIT = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")


def _times(cpu: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in cpu)


def split(before: Any, after: Any) -> dict[str, float]:
    """How one cpu's time went between two reads, in percent of the time that passed (2 decimals): user, nice,
    system, idle, iowait, irq, softirq and active (= 100 - idle). Every column counts in the total, as xySat
    adds up every column of /proc/stat."""
    deltas = [max(0.0, b - a) for a, b in zip(_times(before), _times(after), strict=False)]
    total = sum(deltas) or 1.0
    fields = after._fields if hasattr(after, "_fields") else ()
    out = {key: 0.0 for key in _SPLIT}
    for name, delta in zip(fields, deltas, strict=False):
        if name in out:
            out[name] = min(100.0, max(0.0, round(100 * delta / total, 2)))
    if not any(deltas):
        out["idle"] = 100.0
    out["active"] = round(100 - out["idle"], 2)
    return out


class CpuLoad:
    """The cpu split since the previous call (one per cadence: the minute sample and quickmon each have their
    own). Primed when made, so its first call measures the time since."""

    def __init__(self) -> None:
        self._total = psutil.cpu_times()
        self._each = psutil.cpu_times(percpu=True)

    def sample(self) -> dict[str, Any]:
        """{avgLoad, currentLoad, cpus: [split per cpu], totals: split} as xySat's getCPUFast."""
        total, each = psutil.cpu_times(), psutil.cpu_times(percpu=True)
        totals = split(self._total, total)
        if len(each) == len(self._each):
            cpus = [split(a, b) for a, b in zip(self._each, each, strict=True)]
        else:  # a cpu came or went: nothing to compare with yet
            cpus = [split(b, b) for b in each]
        self._total, self._each = total, each
        return {"avgLoad": round(os.getloadavg()[0], 2), "currentLoad": totals["active"], "cpus": cpus,
                "totals": totals}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DiskTotals:
    """Every counted disk added up since boot: bytes and operations read and written, and the ms spent on them."""

    rx: int = 0
    wx: int = 0
    reads: int = 0
    writes: int = 0
    read_ms: int = 0
    write_ms: int = 0
    other_ms: int = 0  # discards and flushes (newer kernels)


def parse_diskstats(text: str) -> DiskTotals:
    """/proc/diskstats added up over whole disks (sectors of 512 bytes), as xySat's getDiskFast counts them."""
    rx = wx = reads = writes = read_ms = write_ms = other_ms = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 14 or _NOT_A_DISK.match(parts[2]):
            continue
        try:
            values = [int(v) for v in parts[3:]]
        except ValueError:
            continue
        reads, rx, read_ms = reads + values[0], rx + values[2] * 512, read_ms + values[3]
        writes, wx, write_ms = writes + values[4], wx + values[6] * 512, write_ms + values[7]
        other_ms += (values[14] if len(values) > 14 else 0) + (values[16] if len(values) > 16 else 0)
    return DiskTotals(rx, wx, reads, writes, read_ms, write_ms, other_ms)


def disk_totals() -> DiskTotals:
    if LINUX:
        return parse_diskstats(_read("/proc/diskstats"))
    try:
        io = psutil.disk_io_counters(perdisk=False)
    except (OSError, RuntimeError):
        io = None
    if io is None:
        return DiskTotals()
    return DiskTotals(io.read_bytes, io.write_bytes, io.read_count, io.write_count, getattr(io, "read_time", 0),
                      getattr(io, "write_time", 0))  # fmt: skip


_LOOPBACKS: tuple[float, frozenset[str]] = (0.0, frozenset())
LOOPBACK_TTL = 60.0  # s: interfaces seldom come and go; asking each second costs more than the rest of quickmon


def loopbacks() -> frozenset[str]:
    """The loopback interfaces (read again every LOOPBACK_TTL seconds)."""
    global _LOOPBACKS
    at, names = _LOOPBACKS
    if time.monotonic() - at > LOOPBACK_TTL or not at:
        names = _read_loopbacks()
        _LOOPBACKS = (time.monotonic(), names)
    return names


def _read_loopbacks() -> frozenset[str]:
    out = set()
    with contextlib.suppress(OSError):
        for name, stats in psutil.net_if_stats().items():
            if "loopback" in str(getattr(stats, "flags", "")).split(",") or name == "lo":
                out.add(name)
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address in ("127.0.0.1", "::1") for a in addrs):
            out.add(name)
    return frozenset(out)


def net_counters() -> tuple[dict[str, dict[str, int]], frozenset[str]]:
    """Each interface's cumulative rx/tx bytes, drops and errors (xySat's names), and the loopback ones."""
    try:
        counters = psutil.net_io_counters(pernic=True)
    except OSError:
        counters = {}
    out = {name: {"rx_bytes": c.bytes_recv, "rx_dropped": c.dropin, "rx_errors": c.errin, "tx_bytes": c.bytes_sent,
                  "tx_dropped": c.dropout, "tx_errors": c.errout} for name, c in counters.items()}  # fmt: skip
    return out, loopbacks()


def external_bytes(counters: Mapping[str, Mapping[str, int]], loopback: frozenset[str]) -> tuple[int, int]:
    """rx and tx bytes of every interface but the loopback ones."""
    rx = sum(c["rx_bytes"] for name, c in counters.items() if name not in loopback)
    tx = sum(c["tx_bytes"] for name, c in counters.items() if name not in loopback)
    return rx, tx


def mount_key(mount: str) -> str:
    """xySat's key of a mount: `/` -> root, `/boot/firmware` -> boot_firmware."""
    return re.sub(r"\W+", "_", mount.removeprefix("/")) or "root"


def mounts() -> dict[str, dict[str, Any]]:
    """Local filesystems with a size: {key: {fs, type, size, used, available, use (%), mount, rw}}."""
    out: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    try:
        parts = psutil.disk_partitions(all=True)
    except OSError:
        parts = []
    for part in parts:
        if len(out) >= MAX_MOUNTS:
            break
        if part.fstype in _PSEUDO_FS or part.mountpoint in seen or not os.path.isdir(part.mountpoint):
            continue
        seen.add(part.mountpoint)
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        if not usage.total:
            continue
        room = usage.used + usage.free  # what `df` calls the capacity: the reserved blocks are not the user's
        out[mount_key(part.mountpoint)] = {
            "fs": part.device, "type": part.fstype, "size": usage.total, "used": usage.used,
            "available": usage.free, "use": round(100 * usage.used / room, 2) if room else 0.0,
            "mount": part.mountpoint, "rw": "rw" in part.opts.split(","),
        }  # fmt: skip
    return out


_DUPLEX = {int(psutil.NIC_DUPLEX_FULL): "full", int(psutil.NIC_DUPLEX_HALF): "half"}


def _default_interface() -> str:
    for line in _read("/proc/net/route").splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return ""


def _sys_net(name: str, item: str) -> str:
    return _read(f"/sys/class/net/{name}/{item}").strip() if LINUX else ""


def interfaces(counters: Mapping[str, Mapping[str, int]], loopback: frozenset[str]) -> dict[str, dict[str, Any]]:
    """{name: {iface, ifaceName, default, ip4, ip4subnet, ip6, ip6subnet, mac, internal, virtual, operstate, type,
    duplex, mtu, speed, carrierChanges, rx_bytes, ...}} (the counters are merged in by the caller's rates)."""
    addrs = psutil.net_if_addrs()
    try:
        stats = psutil.net_if_stats()
    except OSError:
        stats = {}
    default = _default_interface()
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(addrs) | set(stats) | set(counters))[:MAX_INTERFACES]:
        ip4 = next((a for a in addrs.get(name, ()) if a.family == socket.AF_INET), None)
        ip6 = next((a for a in addrs.get(name, ()) if a.family == socket.AF_INET6), None)
        mac = next((a.address for a in addrs.get(name, ()) if a.family == psutil.AF_LINK), "")
        stat = stats.get(name)
        internal = name in loopback
        virtual = LINUX and not os.path.exists(f"/sys/class/net/{name}/device")
        wireless = os.path.exists(f"/sys/class/net/{name}/wireless")
        kind = "virtual" if internal or virtual else "wireless" if wireless else "wired"
        duplex = _DUPLEX.get(int(stat.duplex), "") if stat else ""
        changes = _sys_net(name, "carrier_changes")
        out[name] = {
            "iface": name, "ifaceName": name, "default": name == default,
            "ip4": ip4.address if ip4 else "", "ip4subnet": (ip4.netmask or "") if ip4 else "",
            "ip6": ip6.address.split("%")[0] if ip6 else "", "ip6subnet": (ip6.netmask or "") if ip6 else "",
            "mac": mac or "00:00:00:00:00:00", "internal": internal, "virtual": virtual,
            "operstate": _sys_net(name, "operstate") or ("up" if stat and stat.isup else "down"), "type": kind,
            "duplex": duplex, "mtu": stat.mtu if stat else 0, "speed": (stat.speed or None) if stat else None,
            "carrierChanges": int(changes) if changes.isdigit() else 0,
        }  # fmt: skip
    return out


@functools.lru_cache(maxsize=4)
def os_info(hostname: str) -> dict[str, Any]:
    """ServerMonitorData `os` (and hello's), as systeminformation's osInfo names its fields."""
    release: dict[str, str] = {}
    with contextlib.suppress(OSError, AttributeError):
        release = platform.freedesktop_os_release()
    system = platform.system()
    return {
        "platform": system[:1].upper() + system[1:] if system else node_platform(),
        "distro": release.get("NAME", system), "release": release.get("VERSION_ID", platform.release()),
        "codename": release.get("VERSION_CODENAME", ""), "kernel": platform.release(), "arch": node_arch(),
        "hostname": hostname, "fqdn": hostname, "codepage": "UTF-8", "logofile": release.get("ID", ""),
        "serial": _read("/etc/machine-id").strip(), "build": "", "servicepack": "",
        "uefi": os.path.isdir("/sys/firmware/efi"),
    }  # fmt: skip


def _cpuinfo() -> tuple[dict[str, str], int]:
    """The first processor's fields of /proc/cpuinfo, and the number of physical packages."""
    first: dict[str, str] = {}
    packages: set[str] = set()
    for block in _read("/proc/cpuinfo").split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if fields.get("physical id"):
            packages.add(fields["physical id"])
        if not first and fields:
            first = fields
    return first, len(packages) or 1


def _cache_sizes() -> dict[str, int | str]:
    out: dict[str, int | str] = {"l1d": "", "l1i": "", "l2": "", "l3": ""}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")) if LINUX else ():
        level, kind = _read(str(index / "level")).strip(), _read(str(index / "type")).strip()
        size = bytes_from_text(_read(str(index / "size")).strip())
        key = f"l{level}" + ({"Data": "d", "Instruction": "i"}.get(kind, "") if level == "1" else "")
        if key in out and size:
            out[key] = size
    return out


def _ghz(mhz: float) -> float:
    return round(mhz / 1000, 2) if mhz else 0.0


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """What does not change in ServerMonitorData `cpu` (systeminformation's cpu() fields): manufacturer, brand,
    vendor, family, model, stepping, speed (GHz), cores (logical), physicalCores, flags, cache, ..."""
    fields, packages = _cpuinfo() if LINUX else ({}, 1)
    vendor = fields.get("vendor_id", "")
    maker = _MAKERS.get(vendor, vendor or ("ARM" if fields.get("CPU implementer") else "unknown"))
    model_name = fields.get("model name") or fields.get("Model") or platform.processor() or ""
    brand = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|@.*$|\bProcessor\b", "", model_name)
    brand = re.sub(r"\s+", " ", brand.replace(maker, "", 1)).strip()
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, FileNotFoundError):
        freq = None
    cores = psutil.cpu_count() or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or cores
    flags = fields.get("flags") or fields.get("Features") or ""
    return {
        "manufacturer": maker, "brand": brand or model_name, "vendor": vendor or maker,
        "family": fields.get("cpu family", ""), "model": fields.get("model", ""),
        "stepping": fields.get("stepping", ""), "revision": "", "voltage": "",
        "speed": _ghz(freq.max or freq.current) if freq else 0.0, "speedMin": _ghz(freq.min) if freq else 0.0,
        "speedMax": _ghz(freq.max) if freq else 0.0,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip(), "cores": cores,
        "physicalCores": physical, "performanceCores": physical, "efficiencyCores": 0, "processors": packages,
        "socket": "", "flags": flags[:4096], "virtualization": bool(re.search(r"\b(vmx|svm)\b", flags)),
        "cache": _cache_sizes(),
    }  # fmt: skip


def _rate(now: int, before: int | None, seconds: float) -> float:
    return max(0, now - before) / seconds if before is not None and seconds > 0 else 0.0


class HostData:
    """Builds ServerMonitorData (without `commands`, which the plugins give) once a minute, keeping what it needs
    between samples: the cpu reads, the disk and network counters (for the `_sec` rates) and each process's cpu."""

    def __init__(self, hostname: str, started: float | None = None) -> None:
        self.hostname = hostname
        self.started = int(started if started is not None else time.time())
        self.cpu = CpuLoad()
        self.procs = ProcessList()
        self.conns = ConnTable()
        self._me = psutil.Process()
        self._my_cpu = self._own_cpu()
        self._at = time.monotonic()
        self._disks = disk_totals()
        self._net, _ = net_counters()

    def _own_cpu(self) -> float:
        times = self._me.cpu_times()
        return times.user + times.system

    def base(self, jobs: int) -> dict[str, Any]:
        """The cheap part, also in a `dummy` record: uptime, arch, platform, release, load, jobs, the agent's own
        process (its cpu in percent of one core since the last sample)."""
        own = self._own_cpu()
        elapsed = max(time.monotonic() - self._at, 0.001)
        cpu, self._my_cpu = max(0.0, own - self._my_cpu) / elapsed * 100, own
        return {
            "uptime_sec": round(time.time() - psutil.boot_time(), 2), "arch": node_arch(), "platform": node_platform(),
            "release": platform.release(), "load": [round(v, 2) for v in os.getloadavg()], "jobs": jobs,
            "process": {"pid": os.getpid(), "started": self.started, "mem": self._me.memory_info().rss,
                        "cpu": round(cpu, 2)},
        }  # fmt: skip

    def dummy(self, jobs: int) -> dict[str, Any]:
        """What xySat sends when monitoring is disabled: the base, `dummy: true` and empty sections."""
        data = self.base(jobs)
        self._at = time.monotonic()
        data.update(dummy=True, os={}, memory={}, cpu={}, mounts={}, interfaces={}, processes={}, commands={},
                    graphics={}, docker={}, stats={"io": {}, "fs": {}, "network": {}})  # fmt: skip
        return data

    def sample(self, jobs: int, job_procs: Mapping[int, tuple[str, Mapping[str, Any]]] | None = None
               ) -> dict[str, Any]:  # fmt: skip
        """ServerMonitorData. `job_procs`: pid -> (job id, its figures from the jobs report) of the running jobs'
        processes, marked in the process list as xySat marks them."""
        perf: dict[str, float] = {}

        def timed(name: str, start: float) -> float:
            now = time.perf_counter()
            perf[name] = round((now - start) * 1000, 3)
            return now

        began = mark = time.perf_counter()
        data = self.base(jobs)
        now_mono = time.monotonic()
        seconds, self._at = now_mono - self._at, now_mono
        data["os"] = os_info(self.hostname)
        data["memory"] = memory()
        mark = timed("memory", mark)
        data["cpu"] = {**cpu_info(), **self.cpu.sample()}
        mark = timed("cpu", mark)
        data["mounts"] = mounts()
        mark = timed("mounts", mark)
        disks, before = disk_totals(), self._disks
        self._disks = disks
        ms = int(seconds * 1000)
        fs = {"rx": disks.rx, "wx": disks.wx, "tx": disks.rx + disks.wx, "rx_sec": _rate(disks.rx, before.rx, seconds),
              "wx_sec": _rate(disks.wx, before.wx, seconds),
              "tx_sec": _rate(disks.rx + disks.wx, before.rx + before.wx, seconds), "ms": ms}  # fmt: skip
        wait = disks.read_ms + disks.write_ms + disks.other_ms
        wait_before = before.read_ms + before.write_ms + before.other_ms
        io = {"rIO": disks.reads, "wIO": disks.writes, "tIO": disks.reads + disks.writes,
              "rIO_sec": _rate(disks.reads, before.reads, seconds),
              "wIO_sec": _rate(disks.writes, before.writes, seconds),
              "tIO_sec": _rate(disks.reads + disks.writes, before.reads + before.writes, seconds),
              "rWaitTime": disks.read_ms, "wWaitTime": disks.write_ms, "tWaitTime": wait,
              "rWaitPercent": _rate(disks.read_ms, before.read_ms, seconds * 1000) * 100,
              "wWaitPercent": _rate(disks.write_ms, before.write_ms, seconds * 1000) * 100,
              "tWaitPercent": _rate(wait, wait_before, seconds * 1000) * 100, "ms": ms}  # fmt: skip
        mark = timed("disks", mark)
        counters, loopback = net_counters()
        last_net, self._net = self._net, counters
        ifaces = interfaces(counters, loopback)
        names: list[str] = []
        network: dict[str, Any] = {"ifaces": names}
        for name, count in counters.items():
            old = last_net.get(name, {})
            rates = {"rx_sec": _rate(count["rx_bytes"], old.get("rx_bytes"), seconds),
                     "tx_sec": _rate(count["tx_bytes"], old.get("tx_bytes"), seconds)}  # fmt: skip
            if name in ifaces:
                ifaces[name].update(count, **rates, ms=ms)
            if name not in loopback:
                names.append(name)
                for key, value in (*count.items(), *rates.items()):
                    network[key] = network.get(key, 0) + value
        for key in ("rx_bytes", "tx_bytes", "rx_sec", "tx_sec"):
            network.setdefault(key, 0)
        data["interfaces"] = ifaces
        mark = timed("network", mark)
        table = self.procs.sample(job_procs or {})
        mark = timed("processes", mark)
        conns, total, states = self.conns.sample(table.pids)
        network.update(conns=total, states=states)
        timed("conns", mark)
        data["conns"] = conns
        data["processes"] = table.shape
        data["stats"] = {"fs": fs, "io": io, "network": network, "uptime_sec": data["uptime_sec"]}
        perf["total"] = round((time.perf_counter() - began) * 1000, 3)
        data["metrics"] = {"scale": 1000, "perf": perf}
        return data


class QuickData:
    """The `quickmon` payload once a second, cheap (no process or connection list): {mem, cpu, fs: {rx, wx},
    net: {rx, tx}} with the readers the minute sample uses."""

    def __init__(self) -> None:
        self.cpu = CpuLoad()

    def sample(self) -> dict[str, Any]:
        disks = disk_totals()
        rx, tx = external_bytes(*net_counters())
        return {"mem": memory(), "cpu": self.cpu.sample(), "fs": {"rx": disks.rx, "wx": disks.wx},
                "net": {"rx": rx, "tx": tx}}  # fmt: skip
