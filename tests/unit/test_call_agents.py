"""Choosing the agent a call talks to: suffix, the caller's developer key, else the only one."""

from __future__ import annotations

from typing import Any

import pytest

from callboard.cli.agents import AgentChoiceError, Answer, choose_agent


def worker(name: str, key: str = "devkey", developer: str = "") -> dict[str, Any]:
    return {"id": f"AW_{name}", "agent_name": name, "api_key": key, "developer": developer}


FLEET = [worker("my-agent-jack"), worker("my-agent-jill"), worker("my-agent"),
         worker("my-agent-jack"), worker("")]


def test_suffix_picks_the_name_ending_in_it() -> None:
    assert choose_agent(FLEET, "devkey", "jack") == "my-agent-jack"
    assert choose_agent(FLEET, "devkey", "jill") == "my-agent-jill"


def test_suffix_matches_a_whole_dash_part_only() -> None:
    with pytest.raises(AgentChoiceError, match="no agent name ending in '-ack'"):
        choose_agent(FLEET, "devkey", "ack")


def test_suffix_with_several_names_asks_for_agent() -> None:
    fleet = [worker("a-jack"), worker("b-jack")]
    with pytest.raises(AgentChoiceError, match=r"several agent names ending in '-jack'.*: "
                                               r"a-jack, b-jack; give --agent NAME"):
        choose_agent(fleet, "devkey", "jack")


def test_a_developer_key_picks_what_its_own_workers_serve() -> None:
    fleet = [worker("helper", "APIjack", "jack"), worker("helper", "APIjill", "jill"),
             worker("other", "devkey")]
    assert choose_agent(fleet, "APIjack", "") == "helper"


def test_without_suffix_or_developer_key_the_only_name_is_taken() -> None:
    assert choose_agent([worker("solo"), worker("solo"), worker("")], "devkey", "") == "solo"


def test_none_lists_what_is_served() -> None:
    with pytest.raises(AgentChoiceError, match="no named agent worker is connected"):
        choose_agent([worker("")], "devkey", "")
    with pytest.raises(AgentChoiceError, match="served now: my-agent, my-agent-jack, "
                                               "my-agent-jill; start your agent"):
        choose_agent(FLEET, "devkey", "zed")


def test_several_without_suffix_lists_them() -> None:
    with pytest.raises(AgentChoiceError, match="several agent names served by the project's "
                                               "workers: my-agent, my-agent-jack, my-agent-jill"):
        choose_agent(FLEET, "devkey", "")


def test_answer_line_says_worker_agent_developer_and_address() -> None:
    answer = Answer("AW_1", "my-agent-jack", "jack", "10.0.0.5:5123", "AJ_1", "AD_1", "agent-AJ_1")
    assert answer.line() == ("answered by worker AW_1 (my-agent-jack, developer jack, "
                             "10.0.0.5:5123) as agent-AJ_1, job AJ_1")
    assert "production" in Answer("AW_1", "a", "", "", "AJ", "AD", "x").line()
    assert answer.as_json()["worker_id"] == "AW_1"
