"""The job state table: every move is data, a miss is a protocol error, the diagram is derived."""

from __future__ import annotations

import pytest

from callboard.dispatch.model import JobState, ReportedJobStatus
from callboard.dispatch.states import (
    INITIAL,
    TRANSITIONS,
    InvalidTransition,
    Trigger,
    advance,
    mermaid,
    report_trigger,
)
from callboard.protocol.errors import WS_POLICY_VIOLATION, ProtocolViolation


@pytest.mark.parametrize(("pair", "after"), list(TRANSITIONS.items()), ids=str)
def test_advance_follows_the_table(pair: tuple[JobState, Trigger], after: JobState) -> None:
    assert advance(*pair) is after


def test_a_miss_is_a_protocol_error_naming_state_and_trigger() -> None:
    with pytest.raises(InvalidTransition) as caught:
        advance(JobState.OFFERED, Trigger.REPORT_RUNNING)
    err = caught.value
    assert isinstance(err, ProtocolViolation)
    assert err.close_code == WS_POLICY_VIOLATION
    assert (err.state, err.trigger) == (JobState.OFFERED, Trigger.REPORT_RUNNING)
    assert "'offered'" in err.reason and "'report_running'" in err.reason


@pytest.mark.parametrize("state", [s for s in JobState if s.is_terminal])
def test_terminal_states_have_no_way_out(state: JobState) -> None:
    for trigger in Trigger:
        with pytest.raises(InvalidTransition):
            advance(state, trigger)


def _reachable() -> set[JobState]:
    seen, frontier = {INITIAL}, [INITIAL]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is state and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    return seen


def test_every_state_is_reachable_from_pending() -> None:
    assert _reachable() == set(JobState)


def test_every_live_state_can_be_terminated_and_restored() -> None:
    for state in JobState:
        if not state.is_terminal:
            assert advance(state, Trigger.TERMINATE) is JobState.TERMINATED
            assert not advance(state, Trigger.RESTORE).is_terminal


def test_restore_leaves_nothing_offered_or_running() -> None:
    restored = {advance(s, Trigger.RESTORE) for s in JobState if not s.is_terminal}
    assert restored == {JobState.PENDING, JobState.ORPHANED}


def test_every_trigger_is_used() -> None:
    assert {trigger for _, trigger in TRANSITIONS} == set(Trigger)


@pytest.mark.parametrize(
    ("status", "trigger"),
    [
        (ReportedJobStatus.PENDING, None),
        (ReportedJobStatus.RUNNING, Trigger.REPORT_RUNNING),
        (ReportedJobStatus.SUCCESS, Trigger.REPORT_SUCCESS),
        (ReportedJobStatus.FAILED, Trigger.REPORT_FAILED),
    ],
)
def test_report_trigger(status: ReportedJobStatus, trigger: Trigger | None) -> None:
    assert report_trigger(status) is trigger


def test_mermaid_has_every_edge_once_and_marks_start_and_ends() -> None:
    text = mermaid()
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> pending" in lines
    for state in JobState:
        if state.is_terminal:
            assert f"    {state.value} --> [*]" in lines
    edges = {(a, b) for a, _, b, *_ in (ln.split() for ln in lines[2:]) if a != "[*]"}
    expected = {(src.value, dst.value + ":") for (src, _), dst in TRANSITIONS.items()}
    assert {(a, b) for a, b in edges if b != "[*]"} == expected
    assert "    running --> orphaned: worker_lost, restore" in lines
    assert text.endswith("\n")
