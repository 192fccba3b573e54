"""Explain-trace lines, and the sentences that say why a job waits.

The trace answers the question users of LiveKit keep asking — "why did my agent never join?" — from
the dispatch itself: what was created by whom, which workers were considered (with load, status and
address), who was offered, who declined or timed out, who took it and how long that took, and why it
is still waiting. Details are plain JSON values (str, int, float, bool, lists, dicts): the store
keeps them as they are and the explain API returns them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from callboard.dispatch.matching import PoolKey
from callboard.dispatch.model import DispatchSpec

Detail = dict[str, Any]

MAX_LISTED: Final = 20  # candidate lines kept per trace entry; a big pool is summarised past this


def owner_label(owner: str) -> str:
    return f"developer {owner!r}" if owner else "production"


def agent_label(agent_name: str) -> str:
    return f"agent {agent_name!r}" if agent_name else "unnamed agents (automatic dispatch)"


def created(spec: DispatchSpec) -> Detail:
    return {
        "source": spec.source,
        "agent_name": spec.agent_name,
        "owner": spec.owner,
        "room": spec.room.name,
        "job_type": spec.job_type.name.lower(),
    }


def candidate(worker_id: str, load: float, status: str, remote: str, tried: bool) -> Detail:
    return {
        "worker_id": worker_id,
        "load": load,
        "status": status,
        "remote": remote,
        "tried": tried,
    }


def candidates(
    job_id: str, lines: Sequence[Detail], matching: int, why: str, mismatched: dict[str, int]
) -> Detail:
    """Who matched the job; when nobody can take it, why not, and how the others missed.

    `lines` need only cover the first MAX_LISTED of the `matching` workers: the rest are counted.
    A list of at most MAX_LISTED is kept as it is: the dispatcher shares one between the jobs
    of a pool (never changed afterwards), and so does the store's encoding of it.
    """
    shared = isinstance(lines, list) and len(lines) <= MAX_LISTED
    detail: Detail = {"job": job_id, "workers": lines if shared else list(lines[:MAX_LISTED])}
    if matching > MAX_LISTED:
        detail["more"] = matching - MAX_LISTED
    if why:
        detail["why"] = why
    if mismatched:
        detail["not_matching"] = dict(mismatched)
    return detail


def waiting_reason(wanted: PoolKey, full: int, declined: int, others: Sequence[PoolKey]) -> str:
    """One sentence for the queue: nobody matches, everyone is FULL, or everyone declined."""
    matching = full + declined
    if matching == 0:
        return _nobody(wanted, others)
    if declined == 0:
        return (
            "the only matching worker is FULL" if full == 1 else f"{full} matching workers all FULL"
        )
    if full == 0:
        return (
            "the only candidate declined"
            if declined == 1
            else f"all {declined} candidates declined"
        )
    return f"{matching} matching workers: {full} FULL, {declined} declined"


def _nobody(wanted: PoolKey, others: Sequence[PoolKey]) -> str:
    text = (
        f"no worker registered for {agent_label(wanted.agent_name)} with "
        f"{owner_label(wanted.owner)} credentials in project {wanted.project_id}"
    )
    hints = _near_misses(wanted, others)
    return f"{text} ({'; '.join(hints)})" if hints else text


def _near_misses(wanted: PoolKey, others: Sequence[PoolKey]) -> list[str]:
    """Workers that nearly match: the usual cause is a dev worker vs production credentials."""
    same_name = [k for k in others if k.agent_name == wanted.agent_name]
    owners = sorted({owner_label(k.owner) for k in same_name if k.owner != wanted.owner})
    mine = [k for k in same_name if k.owner == wanted.owner]
    hints = [f"it runs for {', '.join(owners)}"] if owners else []
    if n := sum(k.namespace != wanted.namespace for k in mine):
        hints.append(f"{n} in another namespace")
    if n := sum(k.namespace == wanted.namespace and k.job_type != wanted.job_type for k in mine):
        hints.append(f"{n} for another job type")
    return hints
