"""Which workers may serve which dispatch.

Matching is exact equality on five fields, gathered into a `PoolKey`: project (tenants never mix),
owner ("" = production, else a developer: the crosstalk fix — production work never reaches a
laptop, and one developer's calls never reach another's), agent name ("" only to unnamed workers,
as in LiveKit), namespace and job type. Because it is plain equality, the dispatcher indexes workers
and queued jobs by key and never scans for candidates. When nothing matches, `mismatches` says why
the project's other workers were passed over, for the explain trace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

from callboard.dispatch.model import JobType, WorkerInfo


class PoolKey(NamedTuple):
    project_id: str
    owner: str
    agent_name: str
    namespace: str
    job_type: JobType

    def same_agent(self, other: PoolKey) -> bool:
        """Project, owner and agent name agree: enough for a reconnected worker to resume a job."""
        return self[:3] == other[:3]


def worker_key(info: WorkerInfo) -> PoolKey:
    return PoolKey(info.project_id, info.owner, info.agent_name, info.namespace, info.job_type)


def mismatch(worker: PoolKey, wanted: PoolKey) -> str | None:
    """The first field keeping a worker from a job (`other_owner`, ...), or None when it matches."""
    for name, have, want in zip(PoolKey._fields, worker, wanted, strict=True):
        if have != want:
            return f"other_{name.removesuffix('_id')}"
    return None


def mismatches(workers: Iterable[PoolKey], wanted: PoolKey) -> dict[str, int]:
    """How many of the given workers miss the job, by the first field that differs."""
    counts = Counter(reason for w in workers if (reason := mismatch(w, wanted)) is not None)
    return dict(sorted(counts.items()))
