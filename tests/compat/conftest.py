"""Compat fixtures: real livekit-agents worker processes and the real livekit-api client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from livekit import api

from tests.support.agents import AgentFleet, agent_fleet
from tests.support.clients import lk_api
from tests.support.server import ServerProcess


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[AgentFleet]:
    """Starts livekit-agents workers against `server`; stops every one of them afterwards."""
    with agent_fleet(server, tmp_path / "agents") as f:
        yield f


@pytest.fixture
async def lk(server: ServerProcess) -> AsyncIterator[api.LiveKitAPI]:
    """The real livekit-api client with the dev project's production key."""
    async with lk_api(server) as client:
        yield client
