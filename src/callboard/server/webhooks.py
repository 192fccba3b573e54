"""Webhooks out (livekit-wire §5): what LiveKit posts, signed so `livekit-api`'s WebhookReceiver
verifies it, delivered in order per room without ever holding a room up.

Theory of operation. `Notifier.emit(project, room, event)` is synchronous and cheap: it stamps the
event (`id`, `created_at`) and appends it to one queue per (webhook URL, room), nothing more — so a
room, a Twirp call or the dispatch core never waits for a receiver. Each non-empty queue has one
asyncio task that posts its events one at a time, oldest first (hence in order per room), retrying
a failed post with exponential backoff up to `attempts` times, then giving that event up and going
on. A queue holds at most `queue_limit` waiting events; past that, the oldest waiting one is
dropped and counted, and the next event that gets through says so in `num_dropped` (LiveKit's
field for it), so a receiver that was down for long learns what it missed. A queue whose last
event went out is removed with its task: idle rooms cost nothing.

Wire: POST the protojson `WebhookEvent`, `Content-Type: application/webhook+json`, and
`Authorization: <jwt>` (no "Bearer") — an HS256 JWT issued by the webhook's signing key (a
production key of the project) whose claim `sha256` is base64(sha256(body)). The secret is read
from the store at each post (a revoked key stops signing at once) and never logged; URLs are logged
without their user-info and query.

Events: LiveKit's `room_started`, `room_finished`, `participant_joined`, `participant_left`, and
its agent events `agent_job_started` (a worker accepted the job: JobAssignment sent) and
`agent_job_ended` (the job reached a final state: success, failed, terminated or expired — the
job's `state` says which, with its error), both with `job` (a livekit `Job`, its state included)
and `room`. A job that never reached a worker sends neither.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from google.protobuf import json_format
from livekit.protocol import models
from livekit.protocol import webhook as whpb

from callboard.dispatch.model import (
    Action,
    DispatchRecord,
    DispatchSpec,
    JobRecord,
    JobState,
    SaveDispatch,
    SaveJob,
)
from callboard.protocol import convert, ids, tokens
from callboard.store.base import ApiKey, Store, Webhook

log = logging.getLogger("callboard.webhooks")

ROOM_STARTED = "room_started"
ROOM_FINISHED = "room_finished"
PARTICIPANT_JOINED = "participant_joined"
PARTICIPANT_LEFT = "participant_left"
TRACK_PUBLISHED = "track_published"
TRACK_UNPUBLISHED = "track_unpublished"
AGENT_JOB_STARTED = "agent_job_started"
AGENT_JOB_ENDED = "agent_job_ended"

CONTENT_TYPE = "application/webhook+json"
EVENT_ID_PREFIX = "EV_"
TOKEN_TTL_S = 300
QUEUE_LIMIT = 1000
REQUEST_TIMEOUT_S = 10.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
MAX_POSTS_PER_WEBHOOK = 16

class EventSink(Protocol):
    """Where webhook events go (the `Notifier`; a list in tests)."""

    def wants(self, project_id: str) -> bool:
        """False when an event of the project would go nowhere: callers then skip building it."""
        ...

    def emit(self, project_id: str, room_name: str, event: whpb.WebhookEvent) -> None: ...


Post = Callable[[str, bytes, Mapping[str, str]], Awaitable[int]]
"""Send one request (url, body, headers) and return the HTTP status; raise OSError-like errors
(aiohttp.ClientError, asyncio.TimeoutError) when nothing came back."""


# -- the wire -------------------------------------------------------------------------------------


def encode(event: whpb.WebhookEvent) -> bytes:
    """Protojson with LiveKit's (camelCase) field names, as livekit-server's protojson does."""
    return json_format.MessageToJson(event, indent=None).encode()


def sign(body: bytes, key: str, secret: str, *, now_s: float | None = None) -> str:
    """The `Authorization` value: a JWT by `key` whose `sha256` claim pins the body."""
    now = int(time.time() if now_s is None else now_s)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    claims = {"iss": key, "nbf": now, "exp": now + TOKEN_TTL_S, "sha256": digest}
    return tokens.sign(claims, secret)


def safe_url(url: str) -> str:
    """The URL as logs may show it: no user-info (credentials), no query (tokens), no fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_url(url: str) -> str | None:
    """Why `url` cannot take webhooks, or None when it can."""
    if len(url) > 2048:
        return "url is longer than 2048 characters"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        return f"url is not valid: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "url must be an absolute http:// or https:// URL"
    return None


def pick_signing_key(keys: Iterable[ApiKey], project_id: str, wanted: str = "") -> ApiKey | str:
    """The key to sign a project's webhooks with: `wanted` if it is a live production key of the
    project, else (when none is asked for) the project's oldest production key. A string says why
    there is none."""
    production = sorted(
        (k for k in keys if k.project_id == project_id and not k.developer and not k.revoked),
        key=lambda k: k.created_at_ms,
    )
    if not wanted:
        return production[0] if production else "the project has no production key to sign with"
    for key in production:
        if key.key == wanted:
            return key
    return (
        f"signing key {wanted!r} is not a production key of this project "
        "(developer keys never sign webhooks)"
    )


# -- events ---------------------------------------------------------------------------------------


_END_REASONS: tuple[tuple[str, int], ...] = (
    ("timeout", models.ROOM_END_IDLE_TIMEOUT),
    ("deleted", models.ROOM_END_API_DELETE),
    ("shut", models.ROOM_END_SERVER_SHUTDOWN),
)


def room_end_reason(why: str) -> int:
    """The room model's closing reason ("departure timeout", "room deleted …") as RoomEndReason."""
    lowered = why.lower()
    unknown: int = models.ROOM_END_UNKNOWN
    return next((code for word, code in _END_REASONS if word in lowered), unknown)


def job_event(kind: str, spec: DispatchSpec, job: JobRecord) -> whpb.WebhookEvent:
    event = whpb.WebhookEvent(event=kind)
    room = event.room
    room.SetInParent()
    room.sid = spec.room.sid
    room.name = spec.room.name
    convert.fill_job_with_state(event.job, spec, job)
    return event


class JobEvents:
    """Turns the dispatch core's saved job records into agent_job_started / agent_job_ended.

    Fed each batch of actions the hub carried out: a job saved in ASSIGNED has just been accepted
    (the only way into that state), a job saved in a final state has just ended (nothing leaves a
    final state, so each is saved so only once). Only jobs that started end: one that never
    reached a worker (an automatic dispatch in a room without unnamed workers, an expired one) is
    in the event log and the explain trace, not in webhooks. The dispatch comes from the same
    batch when it was saved with it (a deleted dispatch is already forgotten by the core), else
    from the core.
    """

    def __init__(
        self, notifier: EventSink, lookup: Callable[[str], DispatchRecord | None]
    ) -> None:
        self._notifier = notifier
        self._lookup = lookup

    def __call__(self, actions: list[Action]) -> None:
        # Runs for every batch of every dispatch: most batches save no job that starts or ends,
        # and most projects have no webhook, so both are ruled out before anything is built.
        for action in actions:
            if isinstance(action, SaveJob):
                job = action.record
                kind = _job_event_kind(job)
                if kind is not None and self._notifier.wants(job.project_id):
                    self._job_saved(kind, job, actions)

    def _job_saved(self, kind: str, job: JobRecord, actions: list[Action]) -> None:
        spec = _saved_spec(actions, job.dispatch_id)
        if spec is None and (record := self._lookup(job.dispatch_id)) is not None:
            spec = record.spec
        if spec is not None:
            self._notifier.emit(job.project_id, job.room_name, job_event(kind, spec, job))


def _job_event_kind(job: JobRecord) -> str | None:
    if job.state is JobState.ASSIGNED:
        return AGENT_JOB_STARTED
    if job.state.is_terminal and job.participant_identity:  # it had started
        return AGENT_JOB_ENDED
    return None


def _saved_spec(actions: list[Action], dispatch_id: str) -> DispatchSpec | None:
    """The dispatch as saved in this batch (its last save), if it was."""
    for action in reversed(actions):
        if isinstance(action, SaveDispatch) and action.record.spec.dispatch_id == dispatch_id:
            return action.record.spec
    return None


# -- delivery -------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Queue:
    """The events waiting for one (webhook, room), and its delivery task."""

    hook: Webhook
    room: str
    waiting: collections.deque[whpb.WebhookEvent] = field(default_factory=collections.deque)
    dropped: int = 0  # since the last event that got through
    task: asyncio.Task[None] | None = None


@dataclass
class WebhookStats:
    """Counters for tests and metrics."""

    emitted: int = 0
    delivered: int = 0
    failed_posts: int = 0
    given_up: int = 0  # events dropped after their last attempt
    overflowed: int = 0  # events dropped because their queue was full


class Notifier:
    """Every project's webhook queues. `start` before emitting; `close` at shutdown."""

    def __init__(
        self,
        store: Store,
        *,
        attempts: int = 5,
        queue_limit: int = QUEUE_LIMIT,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        post: Post | None = None,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._attempts = max(1, attempts)
        self._queue_limit = max(1, queue_limit)
        self._backoff = (backoff_first_s, backoff_max_s)
        self._post = post
        self._clock_s = clock_s
        self._session: aiohttp.ClientSession | None = None
        self._hooks: dict[str, list[Webhook]] = {}
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._refused: set[str] = set()  # webhooks whose signing key failed: logged once
        self.stats = WebhookStats()

    async def start(self) -> None:
        if self._post is None:
            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            self._session = aiohttp.ClientSession(timeout=timeout)
        self.reload()

    def reload(self, project_id: str | None = None) -> None:
        """Re-read the webhook list (all projects, or one) after the admin plane changed it."""
        hooks = self._store.list_webhooks(project_id)
        if project_id is None:
            self._hooks.clear()
        else:
            self._hooks.pop(project_id, None)
        for hook in hooks:
            self._hooks.setdefault(hook.project_id, []).append(hook)
        live = {h.webhook_id for hs in self._hooks.values() for h in hs}
        for key, queue in list(self._queues.items()):
            if queue.hook.webhook_id not in live:
                self._discard(key, queue)
        for webhook_id in set(self._limits) - live:
            del self._limits[webhook_id]

    def wants(self, project_id: str) -> bool:
        return bool(self._hooks.get(project_id))

    def emit(self, project_id: str, room_name: str, event: whpb.WebhookEvent) -> None:
        """Queue `event` for each of the project's webhooks; returns at once."""
        hooks = self._hooks.get(project_id)
        if not hooks:
            return
        event.id = ids.new_id(EVENT_ID_PREFIX)
        event.created_at = int(self._clock_s())
        self.stats.emitted += 1
        for hook in hooks:
            self._enqueue(hook, room_name, event)

    def pending(self) -> int:
        """Events waiting, across queues (the one being posted not counted)."""
        return sum(len(q.waiting) for q in self._queues.values())

    def busy(self) -> bool:
        return bool(self._queues)

    async def close(self, grace_s: float = 2.0) -> None:
        """Give queued events `grace_s` to go out, then stop; say how many did not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._queues and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = self.pending() + sum(1 for q in self._queues.values() if q.task is not None)
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for key, queue in list(self._queues.items()):
            self._discard(key, queue)
        await asyncio.gather(*tasks, return_exceptions=True)
        if left:
            log.warning("shutting down with %d webhook events undelivered", left)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- queues

    def _enqueue(self, hook: Webhook, room_name: str, event: whpb.WebhookEvent) -> None:
        key = (hook.webhook_id, room_name)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(hook, room_name)
        if len(queue.waiting) >= self._queue_limit:
            queue.waiting.popleft()
            self._overflowed(queue)
        copy = whpb.WebhookEvent()
        copy.CopyFrom(event)
        queue.waiting.append(copy)
        if queue.task is None:
            queue.task = asyncio.get_running_loop().create_task(self._drain(key, queue))

    def _overflowed(self, queue: _Queue) -> None:
        queue.dropped += 1
        self.stats.overflowed += 1
        if queue.dropped == 1 or queue.dropped % 100 == 0:
            log.warning(
                "webhook %s is not keeping up: dropped %d oldest events of room %s "
                "(at most %d wait per room)",
                safe_url(queue.hook.url), queue.dropped, queue.room, self._queue_limit,
            )

    def _discard(self, key: tuple[str, str], queue: _Queue) -> None:
        self._queues.pop(key, None)
        if queue.task is not None and queue.task is not asyncio.current_task():
            queue.task.cancel()

    async def _drain(self, key: tuple[str, str], queue: _Queue) -> None:
        try:
            while queue.waiting:
                event = queue.waiting.popleft()
                told = event.num_dropped = queue.dropped
                if await self._deliver(queue.hook, event):
                    queue.dropped -= told  # more may have overflowed meanwhile
                else:
                    queue.dropped += 1
        except Exception:
            log.exception("webhook queue for %s failed", safe_url(queue.hook.url))
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]

    # -- posting

    async def _deliver(self, hook: Webhook, event: whpb.WebhookEvent) -> bool:
        """Post with retries; True once the receiver took it."""
        what = f"{event.event} {event.id} to {safe_url(hook.url)}"
        for attempt in range(1, self._attempts + 1):
            outcome = await self._attempt(hook, event)
            if outcome is None:
                self.stats.delivered += 1
                log.debug("webhook %s delivered (attempt %d)", what, attempt)
                return True
            self.stats.failed_posts += 1
            if outcome.startswith("refused"):
                log.warning("webhook %s not delivered: %s", what, outcome)
                break
            log.info("webhook %s failed (attempt %d of %d): %s",
                     what, attempt, self._attempts, outcome)
            if attempt < self._attempts:
                await asyncio.sleep(self._backoff_s(attempt))
        else:
            log.warning("webhook %s given up after %d attempts", what, self._attempts)
        self.stats.given_up += 1
        return False

    def _backoff_s(self, attempt: int) -> float:
        first, most = self._backoff
        return float(min(most, first * 2 ** (attempt - 1)))

    async def _attempt(self, hook: Webhook, event: whpb.WebhookEvent) -> str | None:
        """None on success, else why not ("refused: …" when retrying cannot help)."""
        key = self._store.get_key(hook.signing_key)
        if key is None or key.project_id != hook.project_id or key.developer:
            return self._key_refused(hook)
        self._refused.discard(hook.webhook_id)
        body = encode(event)
        headers = {"Content-Type": CONTENT_TYPE, "Authorization": sign(body, key.key, key.secret)}
        limit = self._limits.setdefault(hook.webhook_id, asyncio.Semaphore(MAX_POSTS_PER_WEBHOOK))
        try:
            async with limit:
                status = await self._send(hook.url, body, headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= status < 300:
            return None
        if 400 <= status < 500 and status not in (408, 429):
            return f"refused: HTTP {status}"
        return f"HTTP {status}"

    def _key_refused(self, hook: Webhook) -> str:
        why = f"refused: signing key {hook.signing_key} is revoked or no longer a production key"
        if hook.webhook_id not in self._refused:
            self._refused.add(hook.webhook_id)
            log.error("webhook %s (%s): %s; re-add the webhook with a live production key",
                      hook.webhook_id, safe_url(hook.url), why.removeprefix("refused: "))
        return why

    async def _send(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        if self._post is not None:
            return await self._post(url, body, headers)
        assert self._session is not None, "Notifier.start() was not awaited"
        async with self._session.post(url, data=body, headers=dict(headers)) as resp:
            await resp.read()
            return resp.status
