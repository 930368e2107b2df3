"""The definitions a new cluster starts with (digest section 4): same ids, titles and fields as xyOps,
so xyOps clients and exports line up. Each entry is (family, activity type, record)."""

from __future__ import annotations

from typing import Any

from storage.definitions import Family
from storage.families import ALERTS, CATEGORIES, CHANNELS, GROUPS, MONITORS, PLUGINS, ROLES, TAGS, WEB_HOOKS

SHELL_BODY = "#!/bin/sh\n\n# Enter your shell script code here"


def _param(pid: str, title: str, kind: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "title": title, "type": kind, "value": value, **extra}


ROLE_ALL: dict[str, Any] = {
    "id": "all", "title": "All Users", "enabled": True, "icon": "", "categories": [], "groups": [],
    "privileges": {"create_events": True, "edit_events": True, "run_jobs": True, "tag_jobs": True},
    "notes": "Privileges every user may be given.",
}  # fmt: skip

CATEGORY_GENERAL: dict[str, Any] = {
    "id": "general", "title": "General", "enabled": True, "sort_order": 0, "color": "plain", "icon": "",
    "limits": [], "actions": [], "notes": "For events that belong nowhere else.",
}  # fmt: skip

GROUP_MAIN: dict[str, Any] = {"id": "main", "title": "Main Group", "hostname_match": ".+", "alert_actions": [],
                              "sort_order": 0, "icon": "", "notes": ""}  # fmt: skip

PLUGINS_DEFAULT: list[dict[str, Any]] = [
    {"id": "testplug", "title": "Test Plugin", "enabled": True, "stock": True, "type": "event",
     "command": "[test-plugin]", "kill": "parent", "icon": "test-tube", "params": [
         _param("duration", "Test Duration (seconds)", "text", 60, variant="number", required=True),
         _param("action", "Simulate Result", "select", "Success, Error, Warning, Critical, Crash"),
         _param("custom", "Custom Value", "text", ""),
         _param("burn", "Burn Memory/CPU", "checkbox", False),
         _param("network", "Generate Network Traffic", "checkbox", False),
         _param("upload", "Upload Sample File", "checkbox", False)]},
    {"id": "shellplug", "title": "Shell Script", "enabled": True, "stock": True, "type": "event",
     "command": "[shell-plugin]", "kill": "all", "icon": "console", "params": [
         _param("script", "Script Source", "code", SHELL_BODY, locked=True, required=True),
         _param("annotate", "Add Date/Time Stamps to Log", "checkbox", False)]},
    {"id": "httpplug", "title": "HTTP Request", "enabled": True, "stock": True, "type": "event",
     "command": "[http-plugin]", "kill": "parent", "icon": "wan", "params": [
         _param("method", "Method", "select", "GET, HEAD, POST, PUT, DELETE"),
         _param("url", "URL", "text", "https://", required=True, locked=True),
         _param("headers", "Request Headers", "textarea", "User-Agent: Podium/HTTP-Plugin"),
         _param("data", "POST Data", "textarea", ""),
         _param("timeout", "Timeout (Seconds)", "text", "30", variant="number"),
         _param("idle_timeout", "Idle Timeout (Seconds)", "text", "30", variant="number"),
         _param("connect_timeout", "Connect Timeout (Seconds)", "text", "10", variant="number"),
         _param("success_match", "Success Match", "text", ""),
         _param("error_match", "Error Match", "text", ""),
         _param("follow", "Follow Redirects", "checkbox", False),
         _param("download", "Download File", "checkbox", False),
         _param("ssl_cert_bypass", "SSL Cert Bypass", "checkbox", False)]},
    {"id": "dockerplug", "title": "Docker Run", "enabled": True, "stock": True, "type": "event",
     "command": "[docker-plugin]", "kill": "all", "runner": True, "icon": "docker", "params": [
         _param("image_name", "Image Name", "text", "ghcr.io/pixlcore/xyops-shell-image", locked=True, required=True),
         _param("image_ver", "Image Version", "text", "latest", locked=True, required=True),
         _param("cont_name", "Container Name", "text", "podium-job-{{id}}", required=True),
         _param("cont_cpus", "Max CPUs", "text", 1, variant="number"),
         _param("cont_mem", "Max Memory", "text", "1 GB"),
         _param("cont_net", "Join Network", "text", ""),
         _param("cont_extras", "Command Extras", "text", "", locked=True),
         _param("cont_cmd", "Launch Command", "text", "xyrun", locked=True),
         _param("run_mode", "Run Mode", "select", "Send Job JSON, Send Script Source"),
         _param("script", "Script Source", "code", SHELL_BODY, locked=True, required=True)]},
    {"id": "hookplug", "title": "Fire Web Hook", "enabled": True, "type": "event", "command": "[hook-plugin]",
     "script": "", "kill": "parent", "runner": False, "icon": "webhook", "uid": "", "gid": "", "params": [
         {"id": "web_hook", "title": "Web Hook", "type": "system", "locked": False, "required": True,
          "list_id": "web_hooks", "multiple": False},
         _param("text", "Custom Text", "textarea", "", locked=False, required=False, regex="")]},
    {"id": "open_files", "title": "Count Open Files", "enabled": True, "type": "monitor", "command": "/bin/sh",
     "script": "cat /proc/sys/fs/file-nr", "groups": [], "format": "text", "params": []},
]  # fmt: skip

WEB_HOOK_EXAMPLE: dict[str, Any] = {
    "id": "example_hook", "title": "Example Hook", "enabled": True, "url": "https://httpbin.org/post",
    "method": "POST", "headers": [{"name": "Content-Type", "value": "application/json"},
                                  {"name": "User-Agent", "value": "Podium/WebHook"}],
    "body": '{\n\t"text": "{{text}}",\n\t"content": "{{text}}",\n\t"message": "{{text}}"\n}',
    "timeout": 30, "retries": 0, "follow": False, "ssl_cert_bypass": False, "icon": "", "notes": "",
}  # fmt: skip

TAGS_DEFAULT: list[dict[str, Any]] = [
    {"id": "important", "title": "Important", "icon": "alert-rhombus", "notes": ""},
    {"id": "flag", "title": "Flag", "icon": "flag-checkered", "notes": ""},
]

CHANNEL_SEV1: dict[str, Any] = {
    "id": "sev1", "title": "Severity 1", "enabled": True, "users": ["admin"], "email": "", "web_hook": "",
    "run_event": "", "sound": "attention-3.mp3", "icon": "", "shell_exec": "", "max_per_day": 0, "notes": "",
}  # fmt: skip


def _monitor(mid: str, title: str, source: str, data_type: str, suffix: str, scale: float,
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    rate = {"delta": True, "delta_min_value": 0, "divide_by_delta": True} if extra.pop("rate", False) else {}
    return {"id": mid, "title": title, "source": source, "data_type": data_type, "suffix": suffix, "groups": [],
            "display": True, "min_vert_scale": scale, "icon": "", "notes": "", **rate, **extra}


# The stock monitors (xyOps internal/setup.json): ids, sources and types are what the stock alerts, the UI's charts
# and the agents' ServerMonitorData agree on; sort_order follows the list.
MONITORS_DEFAULT: list[dict[str, Any]] = [
    {**m, "sort_order": i} for i, m in enumerate([
        _monitor("load_avg", "CPU Load Average", "load[0]", "float", "", 1.0),
        _monitor("cpu_usage", "CPU Usage %", "cpu.currentLoad", "float", "%", 100),
        _monitor("mem_used", "Memory in Use", "memory.used", "bytes", "", 1024),
        _monitor("mem_free", "Available Memory", "memory.available", "bytes", "", 1024),
        _monitor("net_conns", "Network Connections", "stats.network.conns", "integer", "", 10),
        _monitor("disk_usage_root", "Disk Usage % (Root)", "mounts.root.use", "float", "%", 100),
        _monitor("disk_read_sec", "Disk Read (Bytes)", "stats.fs.rx", "bytes", "/sec", 1024, rate=True),
        _monitor("disk_write_sec", "Disk Write (Bytes)", "stats.fs.wx", "bytes", "/sec", 1024, rate=True),
        _monitor("disk_iops_sec", "Disk I/O Operations", "stats.io.tIO", "integer", "/sec", 100, rate=True),
        _monitor("io_wait", "CPU I/O Wait %", "cpu.totals.iowait", "float", "%", 100, notes="Linux only."),
        _monitor("open_files", "Open Files", "commands.open_files", "integer", "", 10, data_match=r"(\d+)",
                 notes="Linux only: the open_files monitor plugin reads /proc/sys/fs/file-nr."),
        _monitor("os_bytes_in_sec", "Network In (Bytes)", "stats.network.rx_bytes", "bytes", "/sec", 1024, rate=True),
        _monitor("os_bytes_out_sec", "Network Out (Bytes)", "stats.network.tx_bytes", "bytes", "/sec", 1024,
                 rate=True),
        _monitor("total_procs", "Total Processes", "processes.all", "integer", "", 10),
        _monitor("active_jobs", "Active Jobs", "jobs", "integer", "", 10),
    ])
]  # fmt: skip


def _alert(aid: str, title: str, expression: str, message: str, monitor_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": aid, "title": title, "expression": expression, "message": message, "groups": [], "actions": [],
            "monitor_id": monitor_id, "enabled": True, "samples": 1, "icon": "", "notes": "",
            "limit_jobs": False, "abort_jobs": False, "exclusive_actions": False, **extra}


# The stock alerts (xyOps internal/setup.json): the same ids and expressions, our own wording.
ALERTS_DEFAULT: list[dict[str, Any]] = [
    _alert("load_avg_high", "High CPU Load", "monitors.load_avg >= (cpu.cores + 1)",
           "The CPU load average is high: {{float(monitors.load_avg)}} on {{cpu.cores}} cores", "load_avg"),
    _alert("mem_free_low", "Low Memory", "memory.available < (memory.total * 0.05)",
           "Under 5% of memory is available ({{bytes(memory.available)}} of {{bytes(memory.total)}})", "mem_free"),
    _alert("io_wait_high", "High I/O Wait", "monitors.io_wait >= 75",
           "The CPU is waiting on disk I/O {{pct(monitors.io_wait)}} of the time", "io_wait"),
    _alert("disk_usage_root_high", "Disk Full", "monitors.disk_usage_root >= 90",
           "The root filesystem is {{pct(monitors.disk_usage_root)}} full", "disk_usage_root"),
    _alert("active_jobs_high", "High Active Jobs", "monitors.active_jobs >= 50",
           "There are {{number(monitors.active_jobs)}} jobs running at once", "active_jobs", limit_jobs=True),
]  # fmt: skip


def default_definitions() -> list[tuple[Family, str, dict[str, Any]]]:
    """Every default definition, in creation order (referenced objects before their users)."""
    out: list[tuple[Family, str, dict[str, Any]]] = [
        (ROLES, "role", ROLE_ALL),
        (GROUPS, "group", GROUP_MAIN),
        *((PLUGINS, "plugin", p) for p in PLUGINS_DEFAULT),
        (CATEGORIES, "category", CATEGORY_GENERAL),
        (WEB_HOOKS, "web_hook", WEB_HOOK_EXAMPLE),
        *((TAGS, "tag", t) for t in TAGS_DEFAULT),
        (CHANNELS, "channel", CHANNEL_SEV1),
        *((MONITORS, "monitor", m) for m in MONITORS_DEFAULT),
        *((ALERTS, "alert", a) for a in ALERTS_DEFAULT),
    ]
    return out
