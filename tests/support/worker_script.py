"""What the worker scripts share: run as `python tests/support/<script>.py`, each one a real
livekit-agents `AgentServer` in its own process (see `tests.support.worker_procs`).

Import this module before `livekit.agents`: importing it sets the warnings filters first (the SDK
and PyJWT warn at import and on the dev key). A script puts the repository root on `sys.path`
before importing it, as a script's own folder is all Python puts there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

warnings.simplefilter("ignore", DeprecationWarning)
try:
    from jwt.warnings import InsecureKeyLengthWarning

    warnings.simplefilter("ignore", InsecureKeyLengthWarning)
except ImportError:  # older PyJWT: nothing to filter
    pass

from livekit.agents import AgentServer, JobExecutorType  # noqa: E402

_write_lock = threading.Lock()


def record(out: Path, **fields: Any) -> None:
    """Append one JSON line; jobs run in executor threads, so lines are written whole, locked."""
    line = json.dumps({**fields, "pid": os.getpid(), "at": time.time()}) + "\n"
    with _write_lock, open(out, "a") as fh:
        fh.write(line)
        fh.flush()


def thread_server(**options: Any) -> AgentServer:
    """Jobs on threads, no warm processes, health server on 127.0.0.1 port 0 (livekit-wire §9):
    with host "" and port 0, IPv4 and IPv6 would get two ports."""
    return AgentServer(job_executor_type=JobExecutorType.THREAD, num_idle_processes=0,
                       host="127.0.0.1", port=0, **options)  # fmt: skip


async def run_until_signalled(
    server: AgentServer, before_close: Callable[[], None] | None = None
) -> None:
    """`server.run()` until SIGTERM or SIGINT, then `aclose()` within 5 s; a fatal error of
    `run()` (its only early return) is raised, into the script's log."""
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
    if before_close is not None:
        before_close()
    try:
        await asyncio.wait_for(server.aclose(), timeout=5)
    finally:
        run.cancel()
