"""`dispatch explain` for people: the server's explain JSON as a story with timings.

Pure functions from the JSON of `GET /callboard/v1/dispatches/<id>/explain` to text, so they are
tested without a server. Times are milliseconds since the dispatch was created; the last line says
where the dispatch went and why — or why it is still waiting.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

Json = dict[str, Any]

_DECLINED = {
    "declined": "declined",
    "timeout": "did not answer in time",
    "worker_gone": "disconnected before answering",
}


def render(d: Json) -> list[Any]:
    """What `dispatch explain` prints, top to bottom: header lines, the trace table, the outcome."""
    return [*header(d), trace_table(d), f"outcome: {outcome(d)}"]


def header(d: Json) -> list[str]:
    owner = f"developer {d['developer']!r}" if d.get("developer") else "production"
    agent = f"agent {d['agent_name']!r}" if d.get("agent_name") else "unnamed agents"
    lines = [
        f"dispatch {d['id']}: {agent} in room {d['room']}",
        f"made by {d.get('source') or '?'} with {owner} credentials (key {d.get('api_key', '?')})",
    ]
    if d.get("metadata"):
        lines.append(f"metadata: {_short(d['metadata'], 200)}")
    if d.get("deleted"):
        lines.append("this dispatch has been deleted")
    return lines


def trace_table(d: Json) -> Table:
    start = int(d.get("created_at_ms") or 0)
    tbl = Table(title=f"trace of {d['id']}", show_lines=False)
    tbl.add_column("+ms", justify="right")
    tbl.add_column("step")
    tbl.add_column("what happened", overflow="fold")
    for entry in d.get("trace", []):
        at = int(entry.get("at_ms") or start) - start
        tbl.add_row(str(at), str(entry.get("what", "")), describe(entry))
    return tbl


def describe(entry: Json) -> str:
    """One trace entry in words; an unknown kind shows its raw detail (newer servers add some)."""
    what = str(entry.get("what", ""))
    detail: Json = entry.get("detail") or {}
    job = f"job {detail['job']}" if detail.get("job") else "job"
    worker = detail.get("worker", "?")
    if what == "created":
        return _created(detail)
    if what == "candidates":
        return _candidates(job, detail)
    if what == "offered":
        return f"{job} offered to worker {worker} (load {_load(detail.get('load'))})"
    if what in _DECLINED:
        why = f": {detail['reason']}" if detail.get("reason") else ""
        after = f" ({detail['after_ms']} ms)" if detail.get("after_ms") else ""
        return f"worker {worker} {_DECLINED[what]}{after}{why}"
    if what == "queued":
        return f"{job} waits: {detail.get('why', '')}"
    if what == "retry":
        return (f"worker {worker} declined {job} before and reports itself available: asked again "
                f"({detail.get('declines', '?')} declines so far)")
    if what == "assigned":
        return (f"worker {worker} took {job} as {detail.get('identity', '?')}, "
                f"{detail.get('elapsed_ms', '?')} ms after the dispatch was created")
    if what == "running":
        return f"worker {worker} reports {job} running"
    if what == "terminate":
        return f"worker {worker} answered terminate=true: {job} is not run at all"
    if what == "orphaned":
        grace = detail.get("grace_ms", 0) / 1000
        return (f"worker {worker} left ({detail.get('reason', '?')}); {job} waits {grace:g} s for "
                f"it to come back")
    if what == "migrated":
        return f"{job} moved from worker {detail.get('from_worker') or '?'} to worker {worker}"
    if what == "redispatched":
        return (f"{detail.get('from_job', 'the job')} is dispatched again as {job} "
                f"(attempt {detail.get('attempt', '?')})")
    if what == "restored":
        return f"server restarted; {job} was {detail.get('state_before', '?')}"
    if what == "ended":
        error = f": {detail['error']}" if detail.get("error") else ""
        return f"{job} ended {detail.get('state', '?')}{error}"
    if what == "deleted":
        return f"dispatch deleted: {detail.get('reason', '')}"
    return ", ".join(f"{k}={v}" for k, v in detail.items())


def _created(detail: Json) -> str:
    agent = f"agent {detail['agent_name']!r}" if detail.get("agent_name") else "unnamed agents"
    owner = f"developer {detail['owner']!r}" if detail.get("owner") else "production"
    return (f"{detail.get('job_type', 'room')} dispatch for {agent} in room "
            f"{detail.get('room', '?')}, from {detail.get('source', '?')} ({owner})")


def _candidates(job: str, detail: Json) -> str:
    workers: list[Json] = detail.get("workers") or []
    more = int(detail.get("more") or 0)
    count = len(workers) + more
    lines = [f"{job}: {count} matching worker{'' if count == 1 else 's'}"]
    for w in workers:
        tried = ", already tried" if w.get("tried") else ""
        lines.append(f"  {w.get('worker_id')}  load {_load(w.get('load'))}  "
                     f"{w.get('status')}{tried}  {w.get('remote', '')}".rstrip())
    if more:
        lines.append(f"  … and {more} more")
    if detail.get("not_matching"):
        misses = ", ".join(f"{n} {reason.replace('_', ' ')}"
                           for reason, n in detail["not_matching"].items())
        lines.append(f"  other workers of the project: {misses}")
    if detail.get("why"):
        lines.append(f"  nobody can take it: {detail['why']}")
    return "\n".join(lines)


def outcome(d: Json) -> str:
    """Where the dispatch is now, in one sentence."""
    jobs: list[Json] = d.get("jobs") or []
    deleted = _last(d, "deleted")
    if not jobs:
        if deleted:
            return f"deleted before any job: {deleted.get('reason', '')}"
        kind = (_last(d, "created") or {}).get("job_type", "room")
        if kind != "room":
            return f"no job yet: a {kind} dispatch gets a job when a {kind} joins the room"
        return "no job yet"
    job = jobs[-1]
    text = _job_outcome(d, job)
    if len(jobs) > 1:
        text += f" (attempt {job.get('attempt', len(jobs))}; {len(jobs) - 1} earlier)"
    return text


def _job_outcome(d: Json, job: Json) -> str:
    state, worker = job.get("state"), job.get("worker_id") or "?"
    identity = job.get("participant_identity") or "?"
    if state == "pending":
        queued = _last(d, "queued") or {}
        return f"waiting for a worker: {queued.get('why') or 'no worker has taken it yet'}"
    if state == "offered":
        return f"offered to worker {worker}; waiting for its answer"
    if state == "assigned":
        return f"assigned to worker {worker} as {identity}; it has not reported running yet"
    if state == "running":
        took = (_last(d, "assigned") or {}).get("elapsed_ms")
        after = f" (assigned {took} ms after creation)" if took is not None else ""
        return f"running on worker {worker} as {identity}{after}"
    if state == "orphaned":
        return f"worker {worker} is gone; the job waits for it to come back, then is re-dispatched"
    error = f": {job['error']}" if job.get("error") else ""
    if state == "success":
        return f"done: the job ended successfully on worker {worker}"
    return f"{state}{error}"


def _last(d: Json, what: str) -> Json | None:
    for entry in reversed(d.get("trace") or []):
        if entry.get("what") == what:
            return dict(entry.get("detail") or {})
    return None


def _load(value: Any) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return "?"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
