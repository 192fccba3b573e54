"""A light worker-side client of the /agent protocol, for tests and benchmarks (not for agents:
agents use livekit-agents unchanged)."""
