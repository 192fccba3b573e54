"""The Store interface: SQLite implements it now (`store.sqlite`), Redis later.

Writes are queued to one writer that commits them in batches (group commit); every write method
returns once its batch is committed, so a caller that awaits it may acknowledge durably. Writes that
the dispatch core emits at high rate use `submit_*` (fire-and-forget, kept in order) and the caller
awaits `flush()` only where it must acknowledge. Reads see everything committed.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from callboard.dispatch.model import DispatchRecord, JobRecord, RecordEvent


@dataclass(frozen=True)
class Project:
    project_id: str
    name: str
    created_at_ms: int


@dataclass(frozen=True)
class ApiKey:
    key: str
    secret: str
    project_id: str
    developer: str  # "" = production key
    created_at_ms: int
    revoked: bool = False

    @property
    def kind(self) -> str:
        return "developer" if self.developer else "production"


@dataclass(frozen=True)
class Room:
    project_id: str
    name: str
    sid: str
    created_at_ms: int
    creator_key: str = ""  # the key that created it: its jobs belong to that key's developer
    owner: str = ""
    metadata: str = ""
    empty_timeout_s: int = 0
    departure_timeout_s: int = 0
    max_participants: int = 0
    agents: tuple[tuple[str, str], ...] = ()  # (agent_name, metadata) from its room config


@dataclass(frozen=True)
class Webhook:
    """A URL that receives the project's webhooks, signed with one of its production keys."""

    webhook_id: str
    project_id: str
    url: str
    signing_key: str  # the API key whose secret signs the deliveries (never a developer's)
    created_at_ms: int


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    project_id: str
    kind: str
    at_ms: int
    level: str
    message: str
    room_name: str = ""
    dispatch_id: str = ""
    job_id: str = ""
    worker_id: str = ""
    agent_name: str = ""
    owner: str = ""


@dataclass(frozen=True)
class EventQuery:
    project_id: str
    room_name: str | None = None
    job_id: str | None = None
    dispatch_id: str | None = None
    agent_name: str | None = None
    after_seq: int = 0  # paging: only events with seq > after_seq
    limit: int = 100
    kinds: tuple[str, ...] = field(default_factory=tuple)  # prefixes, e.g. ("job.", "dispatch.")


USAGE_FIELDS: tuple[str, ...] = (
    "dispatches",
    "agent_sessions",
    "agent_session_ms",
    "participant_sessions",
    "participant_ms",
)


@dataclass(frozen=True)
class UsageRow:
    """One project's usage by one owner ("" = production) on one UTC day (YYYY-MM-DD)."""

    project_id: str
    owner: str
    day: str
    dispatches: int = 0
    agent_sessions: int = 0  # jobs that ended after a worker was assigned
    agent_session_ms: int = 0  # assigned -> ended, counted on the day the job ended
    participant_sessions: int = 0  # non-agent joins that left
    participant_ms: int = 0  # joined -> left, counted on the day the participant left


@dataclass(frozen=True)
class SweepCutoffs:
    """Retention: rows older than these epoch-ms times go (0 = keep everything of that kind)."""

    events_before_ms: int = 0
    jobs_before_ms: int = 0  # terminal jobs (with their history) last updated before this
    dispatches_before_ms: int = 0  # deleted dispatches created before this, and their jobs
    usage_before_day: str = ""  # usage days before this YYYY-MM-DD


class Store(abc.ABC):
    # -- lifecycle
    @abc.abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema, start the writer."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush queued writes, stop the writer, close files."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return once everything submitted so far is committed."""

    @abc.abstractmethod
    def commit_soon(self) -> None:
        """The burst of work that submitted the queued writes is over: commit them without
        waiting out the rest of a group-commit window (a store without one has nothing to do)."""

    @property
    def failure(self) -> str:
        """Why writes fail for good ("" while they do not): health checks report it, so that
        whatever supervises the server can restart it."""
        return ""

    # -- projects and keys (admin plane)
    @abc.abstractmethod
    async def create_project(self, name: str) -> Project: ...

    @abc.abstractmethod
    async def delete_project(self, project_id: str) -> None:
        """Removes the project and all scoped to it (keys, rooms, dispatches, jobs, events)."""

    @abc.abstractmethod
    def list_projects(self) -> list[Project]: ...

    @abc.abstractmethod
    def get_project(self, name_or_id: str) -> Project | None: ...

    @abc.abstractmethod
    async def add_key(
        self,
        project_id: str,
        developer: str = "",
        key: str | None = None,
        secret: str | None = None,
    ) -> ApiKey: ...

    @abc.abstractmethod
    async def revoke_key(self, key: str) -> ApiKey | None: ...

    @abc.abstractmethod
    def list_keys(
        self, project_id: str | None = None, include_revoked: bool = False
    ) -> list[ApiKey]: ...

    @abc.abstractmethod
    def get_key(self, key: str) -> ApiKey | None:
        """The key if it exists and is not revoked."""

    # -- rooms
    @abc.abstractmethod
    def submit_room(self, room: Room) -> None:
        """Upsert without waiting for the commit (`flush` waits); `get_room` and `list_rooms`
        find the room at once: the store is the registry that makes a room name unique."""

    @abc.abstractmethod
    async def save_room(self, room: Room) -> None:
        """`submit_room`, then return once it is committed."""

    @abc.abstractmethod
    async def delete_room(self, project_id: str, name: str) -> None: ...

    @abc.abstractmethod
    def list_rooms(self, project_id: str, names: list[str] | None = None) -> list[Room]: ...

    @abc.abstractmethod
    def get_room(self, project_id: str, name: str) -> Room | None: ...

    # -- webhooks (admin plane)
    @abc.abstractmethod
    async def add_webhook(self, project_id: str, url: str, signing_key: str) -> Webhook:
        """Raises ValueError when the project already has a webhook for that URL."""

    @abc.abstractmethod
    def list_webhooks(self, project_id: str | None = None) -> list[Webhook]:
        """Oldest first; every project's when `project_id` is None."""

    @abc.abstractmethod
    async def delete_webhook(self, project_id: str, webhook_id: str) -> bool:
        """False when the project has no such webhook."""

    # -- dispatches, jobs (written by the dispatch core's actions)
    @abc.abstractmethod
    def submit_dispatch(self, record: DispatchRecord) -> None: ...

    @abc.abstractmethod
    def submit_job(self, record: JobRecord) -> None:
        """Upsert; append a history row (job, state, at) when the state changed."""

    @abc.abstractmethod
    def submit_event(self, event: RecordEvent) -> None: ...

    @abc.abstractmethod
    def get_dispatch(self, project_id: str, dispatch_id: str) -> DispatchRecord | None: ...

    @abc.abstractmethod
    def list_dispatches(
        self, project_id: str, room_name: str | None = None, include_deleted: bool = False
    ) -> list[DispatchRecord]: ...

    @abc.abstractmethod
    def get_job(self, project_id: str, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def job_history(self, project_id: str, job_id: str) -> list[tuple[str, int]]:
        """(state, at_ms) for every state the job went through, oldest first."""

    @abc.abstractmethod
    def live_state(self) -> tuple[list[DispatchRecord], list[JobRecord]]:
        """Dispatches not deleted and jobs not terminal, across projects: what a restart resumes."""

    # -- events
    @abc.abstractmethod
    def query_events(self, query: EventQuery) -> list[StoredEvent]: ...

    # -- usage, hosts, retention (developer isolation)
    @abc.abstractmethod
    def submit_usage(self, project_id: str, owner: str, day: str, **amounts: int) -> None:
        """Add `amounts` (fields of `UsageRow`) to the day's row, creating it (fire-and-forget)."""

    @abc.abstractmethod
    def query_usage(self, project_id: str, since_day: str = "") -> list[UsageRow]:
        """The project's usage rows from `since_day` on (inclusive), by day then owner."""

    @abc.abstractmethod
    def job_state_counts(self) -> list[tuple[str, str, int]]:
        """(project_id, state, count) over the jobs table."""

    @abc.abstractmethod
    async def set_project_hosts(self, project_id: str, role: str, hosts: list[str]) -> None:
        """Replace the project's hosts of `role` ("production" or "laptop")."""

    @abc.abstractmethod
    def project_hosts(self, project_id: str) -> dict[str, str]:
        """host -> role, as the project marked them."""

    @abc.abstractmethod
    async def sweep_old(self, cutoffs: SweepCutoffs) -> dict[str, int]:
        """Retention: delete what `cutoffs` says; returns rows deleted per table."""
