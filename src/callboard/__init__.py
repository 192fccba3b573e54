"""callboard: a self-hosted, LiveKit-compatible agent dispatch server."""

__version__ = "0.1.0"
