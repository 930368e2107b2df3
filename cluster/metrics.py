"""Prometheus metrics of one node: every family in one place, in a registry of the node's own.

A registry per node (not prometheus_client's global one) keeps several nodes in one process apart (tests run
many). What something does as it happens is counted where it happens (a request, a role change, a scheduler
tick, a placement, a lease round trip); what the node *is* (role, epoch, jobs per state, agents, cache
counters) is read when Prometheus scrapes, from counts the node keeps anyway, so a scrape costs no scan and no
store round trip.

The request path is the hot one, so its counter and histogram are plain integers in dicts (one increment and
one bisect per request, about a tenth of what prometheus_client's locked children cost) turned into metric
families at scrape time. API names come from the registry only (unknown names share one label) and codes are
the API's own, so the label sets stay bounded.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__

if TYPE_CHECKING:
    from .node import NodeRuntime

UNKNOWN_API = "unknown"
# Request latency: a cached read answers in well under a millisecond, a search or an upload in up to seconds.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
# Store round trips: loopback is about 0.1 ms; a primary steps down if renews take 0.7 x lease.
RTT_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Queued -> started: placed at once when a server is free; minutes when a queue or a limit holds a job.
DISPATCH_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# The states a job holds in the primary's view (reported as 0 when none is there, so every series exists).
LIVE_STATES = ("start_delay", "retry_delay", "ready", "queued", "starting", "active", "finishing")
# Scheduler skips by cause (the skip's log line and activity record carry the full reason).
SKIP_KINDS = ("grace", "disabled", "brake", "launch_error")
_CODE = re.compile(r"[a-z_]{1,32}")

# (hits, misses) of one cache, read at scrape time.
CacheCounts = Callable[[], tuple[int, int]]


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        # (ns, name, code) -> calls answered; (ns, name) -> [count per bucket ..., +Inf count, sum of seconds]
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.failovers = Counter("podium_failovers", "Role changes of this node: became_primary or lost_primary.",
                                 ["change"], registry=reg)  # fmt: skip
        self.scheduler_lag = Gauge("podium_scheduler_lag_seconds",
                                   "How long after its second the last scheduler tick finished (primary only).",
                                   registry=reg)  # fmt: skip
        self.scheduler_skipped = Counter("podium_scheduler_skipped_slots", "Scheduled slots skipped, by cause.",
                                         ["reason"], registry=reg)  # fmt: skip
        self.scheduler_launches = Counter("podium_scheduler_launches", "Jobs the scheduler launched.", registry=reg)
        self.dispatch_latency = Histogram("podium_dispatch_latency_seconds",
                                          "From a job being ready (launched, or its delay over) to its start on a "
                                          "server.", buckets=DISPATCH_BUCKETS, registry=reg)  # fmt: skip
        self.store_rtt = Histogram("podium_store_rtt_seconds",
                                   "Round trips of the lease calls to the store (renew on the primary, acquire "
                                   "polls elsewhere).", buckets=RTT_BUCKETS, registry=reg)  # fmt: skip
        for change in ("became_primary", "lost_primary"):
            self.failovers.labels(change)
        for kind in SKIP_KINDS:
            self.scheduler_skipped.labels(kind)
        self.caches: dict[str, CacheCounts] = {}  # name -> counters; the layers that own a cache add it
        self.agents: Callable[[], int] = lambda: 0  # agents connected to this node (set by the gateway)
        # The counts of the node's HTTP workers (api/workers.py), added to this process's at scrape time.
        self.peers: Callable[[], list[dict[str, Any]]] = list
        reg.register(_Requests(self))

    def counts(self) -> dict[str, Any]:
        """This process's request counts and agents (JSON-ready), as a worker hands them to its node process."""
        return {"requests": [[*key, n] for key, n in self.requests.items()],
                "latency": [[*key, timer] for key, timer in self.latency.items()], "agents": self.agents()}  # fmt: skip

    def merged(self) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], list[float]], int]:
        """Requests, latency and agents of this process plus its workers'."""
        requests, latency, agents = dict(self.requests), {k: list(v) for k, v in self.latency.items()}, self.agents()
        for peer in self.peers():
            for ns, name, code, n in peer.get("requests", ()):
                requests[(ns, name, code)] = requests.get((ns, name, code), 0) + int(n)
            for ns, name, timer in peer.get("latency", ()):
                mine = latency.setdefault((ns, name), [0.0] * (len(REQUEST_BUCKETS) + 2))
                if len(timer) == len(mine):
                    latency[(ns, name)] = [a + float(b) for a, b in zip(mine, timer, strict=True)]
            agents += int(peer.get("agents", 0))
        return requests, latency, agents

    def request(self, ns: str, name: str, known: bool, code: str, seconds: float) -> None:
        """One answered API call (`known`: the name is in the registry)."""
        if not known:
            ns, name = "", UNKNOWN_API
        key = (ns, name, code)
        count = self.requests.get(key)
        if count is None:  # a code not seen yet for this call: checked once
            key = (ns, name, _code_label(code))
            count = self.requests.get(key, 0)
        self.requests[key] = count + 1
        timer = self.latency.get((ns, name))
        if timer is None:
            timer = self.latency[(ns, name)] = [0.0] * (len(REQUEST_BUCKETS) + 2)
        timer[bisect_left(REQUEST_BUCKETS, seconds)] += 1
        timer[-1] += seconds

    def role_changed(self, primary: bool) -> None:
        self.failovers.labels("became_primary" if primary else "lost_primary").inc()

    def watch(self, node: NodeRuntime) -> None:
        """Report what `node` is at every scrape."""
        self.registry.register(_NodeState(node, self))


def _api_label(ns: str, name: str) -> str:
    return name if ns in ("app", "") else f"{ns}/{name}"


def _code_label(code: str) -> str:
    return code if code == "0" or _CODE.fullmatch(code) else "other"


class _Requests(Collector):
    """The request counter and latency histogram, from the plain counts of the request path, and the agents
    connected: this process's and its HTTP workers' (read once per scrape)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        calls = CounterMetricFamily("podium_requests", "API calls answered, by API name and reply code (0 = success).",
                                    labels=["api", "code"])  # fmt: skip
        requests, timers, agents = self.metrics.merged()
        for (ns, name, code), count in requests.items():
            calls.add_metric([_api_label(ns, name), code], count)
        latency = HistogramMetricFamily("podium_request_duration_seconds", "Time to answer an API call, by API name.",
                                        labels=["api"])  # fmt: skip
        bounds = [*(repr(b) for b in REQUEST_BUCKETS), "+Inf"]
        for (ns, name), timer in timers.items():
            total, buckets = 0.0, []
            for bound, hits in zip(bounds, timer, strict=False):  # the last item, the sum, is left out
                total += hits
                buckets.append((bound, total))
            latency.add_metric([_api_label(ns, name)], buckets, timer[-1])
        connected = GaugeMetricFamily("podium_agents_connected", "Agents whose WebSocket this node holds.",
                                      value=agents)  # fmt: skip
        return [calls, latency, connected]


class _NodeState(Collector):
    """Families computed at scrape time from what the node already keeps."""

    def __init__(self, node: NodeRuntime, metrics: NodeMetrics) -> None:
        self.node = node
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        node = self.node
        info = GaugeMetricFamily("podium_node_info", "This node (value 1).", labels=["node", "version"])
        info.add_metric([node.node_id, __version__], 1)
        role = GaugeMetricFamily("podium_role", "1 for this node's role, 0 for the other.", labels=["role"])
        role.add_metric(["primary"], 1 if node.is_primary else 0)
        role.add_metric(["satellite"], 0 if node.is_primary else 1)
        epoch = GaugeMetricFamily("podium_epoch", "The fencing epoch: this node's while primary, else the last seen.",
                                  value=node.epoch)  # fmt: skip
        store = GaugeMetricFamily("podium_store_up", "1 while the lease and heartbeat calls reach the store.",
                                  value=1 if node.redis_ok else 0)  # fmt: skip
        yield from (info, role, epoch, store, self._jobs(), *self._caches())

    def _jobs(self) -> Metric:
        jobs = GaugeMetricFamily("podium_jobs", "Unfinished jobs by state, from the primary's view (only the "
                                                "primary reports).", labels=["state"])  # fmt: skip
        dispatcher = self.node.dispatcher
        if dispatcher is not None and dispatcher.loaded and self.node.is_primary:
            counts = dispatcher.tally.states
            for state in LIVE_STATES:
                jobs.add_metric([state], counts.get(state, 0))
        return jobs

    def _caches(self) -> tuple[Metric, Metric]:
        hits = CounterMetricFamily("podium_cache_hits", "Reads a node cache answered.", labels=["cache"])
        misses = CounterMetricFamily("podium_cache_misses", "Reads a node cache had to load.", labels=["cache"])
        for name, counts in self.metrics.caches.items():
            hit, miss = counts()
            hits.add_metric([name], hit)
            misses.add_metric([name], miss)
        return hits, misses
