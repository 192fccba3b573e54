"""Pieces every benchmark here needs the same way: progress lines, free ports, bounded fan-out,
the open-file limit. Imported as `common` (the benchmarks run as scripts from bench/)."""

from __future__ import annotations

import asyncio
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
HOST = "127.0.0.1"


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the result (a table, or --json)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def bounded_gather(factories: list[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run the factories with at most `limit` in flight; results in order."""
    gate = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await factory()

    return list(await asyncio.gather(*(run(f) for f in factories)))


def raise_nofile(wanted: int) -> int:
    """Raise the open-file limit (servers started later inherit it); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
