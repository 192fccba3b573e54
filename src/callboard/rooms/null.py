"""An observer that admits everyone and records nothing: what the server uses until the
dispatch/webhook observer (server/) is plugged in, and what tests use when they need no other."""

from __future__ import annotations

from callboard.rooms.contract import JoinContext, ParticipantView, RoomView
from callboard.store.base import ApiKey


class NullObserver:
    def admit(self, ctx: JoinContext) -> None:
        pass

    def room_started(self, room: RoomView, key: ApiKey | None) -> None:
        pass

    def participant_joined(self, ctx: JoinContext) -> None:
        pass

    def participant_left(self, room: RoomView, participant: ParticipantView, reason: str) -> None:
        pass

    def room_finished(self, room: RoomView, reason: str) -> None:
        pass
