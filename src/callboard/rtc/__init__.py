"""The WebRTC edge: LiveKit's /rtc/v1 signalling codec, aiortc peer connections, data channels.

Nothing here decides who is in a room or who hears what: that is `callboard.rooms`. This package
turns a WebSocket and a peer connection into a `ParticipantEdge` the room model can talk to.
"""
