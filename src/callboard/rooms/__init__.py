"""Rooms: the room/participant model (no I/O) and the observer contract to dispatch and webhooks."""
