"""The one place where the sans-IO dispatch core meets the event loop.

Transports call `Hub.feed(event)`; the hub runs the core, carries out the actions it returns (frames
to workers, writes to the store, log lines) and keeps one timer armed at the core's next deadline.
Everything runs on the event loop thread, so the core needs no locks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from livekit.protocol import agent as pb

from callboard.dispatch.core import Dispatcher
from callboard.dispatch.model import (
    Action,
    CloseWorker,
    Event,
    JobOffer,
    RecordEvent,
    SaveDispatch,
    SaveJob,
    SendAssignment,
    SendAvailabilityRequest,
    SendTermination,
    Tick,
    WorkerInfo,
)
from callboard.protocol import convert, ids, tokens
from callboard.settings import Settings
from callboard.store.base import Store

log = logging.getLogger("callboard.dispatch")
events_log = logging.getLogger("callboard.events")

_INFO_KINDS = ("worker.", "crosstalk.", "webhook.")
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class WorkerLink(Protocol):
    """What the hub needs of a worker connection (implemented by `agent_ws.WorkerConnection`)."""

    info: WorkerInfo

    def send(self, msg: pb.ServerMessage) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


def now_ms() -> int:
    return int(time.time() * 1000)


class Hub:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock_ms: Callable[[], int] = now_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock_ms = clock_ms
        self.core = Dispatcher(
            availability_timeout_ms=int(settings.availability_timeout_s * 1000),
            pending_ttl_ms=int(settings.pending_ttl_s * 1000),
            redispatch_grace_ms=int(settings.redispatch_grace_s * 1000),
            redispatch_count=settings.redispatch_count,
            start_timeout_ms=int(settings.job_start_timeout_s * 1000),
            rng=rng,
        )
        self.node_id = ids.new_id("ND_")
        self.links: dict[str, WorkerLink] = {}
        self.listeners: list[Callable[[list[Action]], None]] = []  # see every carried-out batch
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at_ms: int | None = None

    # -- feeding the core

    def feed(self, event: Event) -> None:
        actions = self.core.handle(event)
        assigned = False
        for action in actions:
            self._carry_out(action)
            assigned = assigned or type(action) is SendAssignment
        for listener in self.listeners:
            try:
                listener(actions)
            except Exception:  # an observer's bug must not stop dispatch
                log.exception("action listener %r failed", listener)
        self._arm_timer()
        if assigned:  # the end of a dispatch's hurry: its records need not wait for more company
            self.store.commit_soon()

    def record(self, event: RecordEvent) -> None:
        """An event-log line from outside the core (rooms, webhooks): stored and logged alike."""
        self.store.submit_event(event)
        self._log_event(event)

    def _carry_out(self, action: Action) -> None:
        match action:
            case SendAvailabilityRequest():
                msg = pb.ServerMessage(
                    availability=pb.AvailabilityRequest(
                        job=self._job_message(action.offer), resuming=action.resuming
                    )
                )
                self._send(action.worker_id, msg)
            case SendAssignment():
                self._send_assignment(action)
            case SendTermination():
                self._send(
                    action.worker_id,
                    pb.ServerMessage(termination=pb.JobTermination(job_id=action.job_id)),
                )
            case CloseWorker():
                link = self.links.get(action.worker_id)
                if link is not None:
                    link.close(action.close_code, action.reason)
            case SaveDispatch():
                self.store.submit_dispatch(action.record)
            case SaveJob():
                self.store.submit_job(action.record)
            case RecordEvent():
                self.record(action)

    def _send(self, worker_id: str, msg: pb.ServerMessage) -> None:
        link = self.links.get(worker_id)
        if link is None:
            log.debug("dropping %s for departed worker %s", msg.WhichOneof("message"), worker_id)
            return
        link.send(msg)

    def _send_assignment(self, action: SendAssignment) -> None:
        link = self.links.get(action.worker_id)
        if link is None:
            return
        key = self.store.get_key(link.info.api_key)
        if key is None:
            link.close(1008, "API key revoked")
            return
        offer = action.offer
        perms = link.info.permissions
        token = tokens.mint_job_token(
            tokens.JobTokenRequest(
                api_key=key.key,
                api_secret=key.secret,
                room=offer.room.name,
                identity=action.participant_identity,
                name=action.participant_name,
                metadata=action.participant_metadata,
                attributes={**action.participant_attributes, "lk.agent_name": offer.agent_name},
                job=tokens.JobClaim(offer.dispatch_id, offer.job_id, offer.attempt),
                can_publish=perms.get("can_publish", True),
                can_subscribe=perms.get("can_subscribe", True),
                can_publish_data=perms.get("can_publish_data", True),
                can_update_own_metadata=perms.get("can_update_metadata", True),
                hidden=perms.get("hidden", False),
            )
        )
        assignment = pb.JobAssignment(job=self._job_message(offer), token=token, url="")
        link.send(pb.ServerMessage(assignment=assignment))

    def _job_message(self, offer: JobOffer) -> pb.Job:
        """`enable_recording` per `Settings.enable_recording`: agents then upload their logs."""
        return convert.job_message(offer, enable_recording=self.settings.enable_recording)

    def _log_event(self, event: RecordEvent) -> None:
        """Server log line of an event-log entry.

        Per-call lifecycle lines (dispatch.*, job.*, agent.*, room.*, participant.*, track.*) go
        to DEBUG when all is well: the project's event log (`callboard logs`) keeps them, and at
        INFO they cost more server time per call than the dispatch itself. Workers, crosstalk and
        webhooks stay at INFO; warnings and errors are always logged.
        """
        level = _LEVELS.get(event.level, logging.INFO)
        if level == logging.INFO and not event.kind.startswith(_INFO_KINDS):
            level = logging.DEBUG
        if not events_log.isEnabledFor(level):
            return
        fields = " ".join(
            f"{name}={value}"
            for name, value in (
                ("project", event.project_id),
                ("room", event.room_name),
                ("dispatch", event.dispatch_id),
                ("job", event.job_id),
                ("worker", event.worker_id),
                ("agent", event.agent_name),
                ("developer", event.owner),
            )
            if value
        )
        events_log.log(level, "%s: %s [%s]", event.kind, event.message, fields)

    # -- timers

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline_ms()
        if deadline == self._timer_at_ms:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at_ms = deadline
        if deadline is None:
            return
        delay_s = max(0.0, (deadline - self.clock_ms()) / 1000)
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at_ms = None
        self.feed(Tick(self.clock_ms()))

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- connections

    def attach(self, link: WorkerLink) -> None:
        self.links[link.info.worker_id] = link

    def detach(self, worker_id: str) -> None:
        self.links.pop(worker_id, None)

    def close_workers_of_key(self, api_key: str, reason: str) -> int:
        doomed = [link for link in self.links.values() if link.info.api_key == api_key]
        for link in doomed:
            link.close(1008, reason)
        return len(doomed)

    def close_workers_of_project(self, project_id: str, reason: str) -> int:
        doomed = [link for link in self.links.values() if link.info.project_id == project_id]
        for link in doomed:
            link.close(1008, reason)
        return len(doomed)
