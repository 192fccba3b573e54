"""The example echo agent (examples/echo_agent.py) run by a real livekit-agents worker, own process.

    LIVEKIT_AGENT_SUFFIX=jack ECHO_AGENT_EVENTS=out.jsonl python tests/support/echo_worker.py

With ECHO_WORKER_PROCESSES=N it uses the process executor with N warm processes instead (load
tests: several jobs at once in one process, on one rtc FFI, can time out on a busy machine).

The example's own entrypoint and agent name on an `AgentServer` with the thread executor and port 0
(livekit-wire §9): jobs start in well under a second instead of a process each. LIVEKIT_URL,
_API_KEY and _API_SECRET come from the environment, as for the example itself.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for `tests.support`

# first: it sets the warnings filters before livekit.agents is imported
from tests.support.worker_script import run_until_signalled, thread_server  # noqa: I001

from livekit.agents import AgentServer, JobExecutorType

EXAMPLE = Path(__file__).parents[2] / "examples" / "echo_agent.py"


def load_example() -> ModuleType:
    """`import echo_agent` from examples/ — by name, so that job processes (process executor)
    can import the entrypoint too: they get examples/ through PYTHONPATH."""
    folder = str(EXAMPLE.parent)
    sys.path.insert(0, folder)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [folder, os.getenv("PYTHONPATH")]))
    return importlib.import_module("echo_agent")


async def main() -> None:
    example = load_example()
    processes = int(os.environ.get("ECHO_WORKER_PROCESSES") or 0)
    if processes:  # a process per job, warmed up in advance: jobs do not share one rtc FFI
        server = AgentServer(job_executor_type=JobExecutorType.PROCESS,
                             num_idle_processes=processes, host="127.0.0.1", port=0)
    else:
        server = thread_server()
    server.rtc_session(example.entrypoint, agent_name=example.AGENT_NAME)
    server.on("worker_registered", example.on_registered)
    await run_until_signalled(server)


if __name__ == "__main__":
    asyncio.run(main())
