"""What must last: projects, keys, rooms, dispatches, jobs and their history, the event log."""

from callboard.store.base import (
    ApiKey,
    EventQuery,
    Project,
    Room,
    Store,
    StoredEvent,
)

__all__ = ["ApiKey", "EventQuery", "Project", "Room", "Store", "StoredEvent"]
