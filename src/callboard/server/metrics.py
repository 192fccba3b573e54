"""Prometheus metrics at `/metrics`, labelled by project (its name).

- `callboard_workers{project,developer,agent_name,status}`: connected workers (gauge);
- `callboard_jobs{project,state}`: stored jobs by state (gauge, from the store at scrape time);
- `callboard_pending_dispatches{project}`: the pending queue depth (gauge);
- `callboard_crosstalk_pools{project}`: pools with crosstalk (gauge);
- `callboard_dispatch_latency_seconds{project}`: dispatch created -> first job assigned (histogram);
- `callboard_dispatches_created_total{project}` and `callboard_jobs_ended_total{project,state}`;
- `callboard_otlp_received_total{project,kind}`: agent uploads (log records, spans, metric points,
  session reports).

Who may read it: the admin credential (`Authorization: Bearer <admin>`) sees every project; a
project token with roomAdmin or roomList sees only its own project's series, so one project never
learns another's figures; `metrics_public = true` serves every project with no credential, for a
scraper on a trusted network.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from callboard.dispatch.model import Action, RecordEvent, SaveJob
from callboard.protocol import tokens
from callboard.server.auth import authenticate, request_token, require
from callboard.server.crosstalk import CrosstalkWatch
from callboard.server.hub import Hub

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
MAX_TRACKED = 100_000  # dispatches awaiting their first assignment, kept for the histogram


class DispatchMetrics:
    """A hub listener feeding the counters and the latency histogram."""

    def __init__(self, hub: Hub, registry: CollectorRegistry) -> None:
        self.hub = hub
        self.latency = Histogram(
            "callboard_dispatch_latency_seconds",
            "Dispatch created to its first job assigned to a worker",
            ["project"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.created = PromCounter(
            "callboard_dispatches_created", "Dispatches created", ["project"], registry=registry
        )
        self.ended = PromCounter(
            "callboard_jobs_ended",
            "Jobs that reached a terminal state",
            ["project", "state"],
            registry=registry,
        )
        self._created_at: dict[str, int] = {}
        self._names: dict[str, str] = {}
        # Children of the labelled metrics, by metric, project id (and state): `labels()` looks
        # them up under a lock on every call, and this runs for every dispatch.
        self._children: dict[tuple[Any, ...], Any] = {}

    def project_name(self, project_id: str) -> str:
        name = self._names.get(project_id)
        if name is None:
            project = self.hub.store.get_project(project_id)
            name = project.name if project else project_id
            self._names[project_id] = name
        return name

    def __call__(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, RecordEvent):
                if action.kind.startswith("dispatch."):
                    self._event(action)
            elif isinstance(action, SaveJob) and action.record.state.is_terminal:
                rec = action.record
                self._child(self.ended, rec.project_id, rec.state.value).inc()

    def _event(self, event: RecordEvent) -> None:
        if event.kind == "dispatch.created":
            self._child(self.created, event.project_id).inc()
            if len(self._created_at) < MAX_TRACKED:
                self._created_at[event.dispatch_id] = event.at_ms
        elif event.kind == "dispatch.assigned":
            started = self._created_at.pop(event.dispatch_id, None)
            if started is not None:
                seconds = max(0, event.at_ms - started) / 1000
                self._child(self.latency, event.project_id).observe(seconds)
        elif event.kind in ("dispatch.deleted", "dispatch.expired"):
            self._created_at.pop(event.dispatch_id, None)

    def _child(self, metric: Any, project_id: str, *labels: str) -> Any:
        """`metric` labelled with the project's name (then `labels`), made once per key."""
        key = (metric, project_id, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.project_name(project_id), *labels)
        return child


class LiveState:
    """A custom collector: gauges computed from the dispatch core and the store at scrape time."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        hub: Hub = self.app["hub"]
        names = {p.project_id: p.name for p in hub.store.list_projects()}
        yield self._workers(hub, names)
        yield self._pending(hub, names)
        yield self._jobs(hub, names)
        yield self._crosstalk(names)
        yield self._otlp(names)

    @staticmethod
    def _workers(hub: Hub, names: dict[str, str]) -> Metric:
        family = GaugeMetricFamily(
            "callboard_workers",
            "Connected workers",
            labels=["project", "developer", "agent_name", "status"],
        )
        for project_id, name in names.items():
            counts: Counter[tuple[str, str, str]] = Counter(
                (v.info.owner, v.info.agent_name, v.status.name.lower())
                for v in hub.core.workers(project_id)
            )
            for (owner, agent, status), n in sorted(counts.items()):
                family.add_metric([name, owner, agent, status], n)
        return family

    @staticmethod
    def _pending(hub: Hub, names: dict[str, str]) -> Metric:
        family = GaugeMetricFamily(
            "callboard_pending_dispatches",
            "Jobs waiting in the pending queue for a worker",
            labels=["project"],
        )
        for project_id, name in names.items():
            family.add_metric([name], hub.core.pending_count(project_id))
        return family

    @staticmethod
    def _jobs(hub: Hub, names: dict[str, str]) -> Metric:
        family = GaugeMetricFamily(
            "callboard_jobs", "Stored jobs by state", labels=["project", "state"]
        )
        for project_id, state, n in hub.store.job_state_counts():
            if project_id in names:
                family.add_metric([names[project_id], state], n)
        return family

    def _crosstalk(self, names: dict[str, str]) -> Metric:
        family = GaugeMetricFamily(
            "callboard_crosstalk_pools", "Worker pools with crosstalk", labels=["project"]
        )
        watch: CrosstalkWatch | None = self.app.get("crosstalk")
        for project_id, name in names.items():
            family.add_metric([name], len(watch.current(project_id)) if watch else 0)
        return family

    def _otlp(self, names: dict[str, str]) -> Metric:
        family = GaugeMetricFamily(
            "callboard_otlp_received",
            "Agent uploads received (log records, spans, metric points, session reports)",
            labels=["project", "kind"],
        )
        counts: Counter[tuple[str, str]] = self.app.get("otlp_counts", Counter())
        for (project_id, kind), n in sorted(counts.items()):
            if project_id in names:
                family.add_metric([names[project_id], kind], n)
        return family


class _OnlyProject:
    """The registry seen through one project's label."""

    def __init__(self, registry: CollectorRegistry, project: str) -> None:
        self._registry = registry
        self._project = project

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if s.labels.get("project") == self._project]
            yield family


def _scope(request: web.Request) -> str | None:
    """None for every project (admin or public), else the one project name the caller may see."""
    if request.app["settings_metrics_public"]:
        return None
    token = tokens.bearer(request.headers.get("Authorization"))
    admin: str = request.app["admin_token"]
    if token and hmac.compare_digest(token.encode(), admin.encode()):
        return None
    hub: Hub = request.app["hub"]
    caller = authenticate(hub.store, request_token(request))
    require(caller, "room_admin", "room_list")
    project = hub.store.get_project(caller.project_id)
    return project.name if project else caller.project_id


async def get_metrics(request: web.Request) -> web.Response:
    project = _scope(request)
    registry: CollectorRegistry = request.app["metrics_registry"]
    source: Any = registry if project is None else _OnlyProject(registry, project)
    body = generate_latest(source)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def install(app: web.Application) -> None:
    """After `crosstalk.install` and `otlp.install`, whose state the gauges read."""
    hub: Hub = app["hub"]
    registry = CollectorRegistry(auto_describe=False)
    hub.listeners.append(DispatchMetrics(hub, registry))
    registry.register(LiveState(app))
    app["metrics_registry"] = registry
    app["settings_metrics_public"] = hub.settings.metrics_public


def routes() -> list[web.RouteDef]:
    return [web.get("/metrics", get_metrics)]
