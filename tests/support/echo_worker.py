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
import signal
import sys
import warnings
from pathlib import Path
from types import ModuleType

warnings.simplefilter("ignore", DeprecationWarning)
try:
    from jwt.warnings import InsecureKeyLengthWarning

    warnings.simplefilter("ignore", InsecureKeyLengthWarning)
except ImportError:
    pass

from livekit.agents import AgentServer, JobExecutorType  # noqa: E402

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
        server = AgentServer(job_executor_type=JobExecutorType.THREAD, num_idle_processes=0,
                             host="127.0.0.1", port=0)
    server.rtc_session(example.entrypoint, agent_name=example.AGENT_NAME)
    server.on("worker_registered", example.on_registered)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    run = asyncio.create_task(server.run(devmode=True))
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
    if run.done():
        run.result()
        return
    try:
        await asyncio.wait_for(server.aclose(), timeout=5)
    finally:
        run.cancel()


if __name__ == "__main__":
    asyncio.run(main())
