"""The crosstalk rule as a plain function: pools, hosts, keys and the hosts a project marked."""

from __future__ import annotations

from callboard.dispatch.model import JobType, WorkerInfo, WorkerStatus, WorkerView
from callboard.server.crosstalk import LAPTOP, PRODUCTION, find_crosstalk, host_of, marks


def view(worker_id: str, remote: str, key: str = "APIprod", owner: str = "",
         agent: str = "my-agent", project: str = "P_a") -> WorkerView:
    info = WorkerInfo(worker_id=worker_id, project_id=project, api_key=key, owner=owner,
                      agent_name=agent, namespace="", job_type=JobType.ROOM, version="1",
                      remote=remote, connected_at_ms=1)
    return WorkerView(info, WorkerStatus.AVAILABLE, 0.0, (), 0)


def test_host_of_strips_the_port() -> None:
    assert host_of("10.0.0.1:5000") == "10.0.0.1"
    assert host_of("[::1]:5000") == "::1"
    assert host_of("::1") == "::1"
    assert host_of("") == ""


def test_one_host_per_key_is_no_crosstalk() -> None:
    workers = [view("AW_1", "10.0.0.1:1"), view("AW_2", "10.0.0.1:2")]
    assert find_crosstalk(workers, {}) == []


def test_one_key_from_two_hosts_is_crosstalk_with_the_fix() -> None:
    (found,) = find_crosstalk([view("AW_1", "10.0.0.1:1"), view("AW_2", "10.0.0.2:1")], {})
    assert found.hosts == ("10.0.0.1", "10.0.0.2") and found.worker_ids == ("AW_1", "AW_2")
    assert "key APIprod used from 2 hosts" in found.reason
    assert "--developer NAME" in found.fix
    assert marks([found]) == {"AW_1": found.reason, "AW_2": found.reason}


def test_different_owners_or_agent_names_are_different_pools() -> None:
    workers = [
        view("AW_1", "10.0.0.1:1"),
        view("AW_2", "10.0.0.2:1", key="APIjack", owner="jack"),
        view("AW_3", "10.0.0.3:1", key="APIjill", owner="jill"),
        view("AW_4", "10.0.0.4:1", agent="other"),
    ]
    assert find_crosstalk(workers, {}) == []


def test_marked_production_hosts_may_share_a_key() -> None:
    roles = {"10.0.0.1": PRODUCTION, "10.0.0.2": PRODUCTION}
    workers = [view("AW_1", "10.0.0.1:1"), view("AW_2", "10.0.0.2:1")]
    assert find_crosstalk(workers, roles) == []


def test_a_laptop_in_a_production_pool_is_crosstalk() -> None:
    roles = {"10.0.0.1": PRODUCTION, "192.168.1.5": LAPTOP}
    workers = [view("AW_1", "10.0.0.1:1"), view("AW_2", "192.168.1.5:1", key="APIother")]
    (found,) = find_crosstalk(workers, roles)
    assert "production hosts (10.0.0.1)" in found.reason and "192.168.1.5" in found.reason
    assert found.api_keys == ("APIother", "APIprod")


def test_a_developer_key_on_two_laptops_is_crosstalk() -> None:
    workers = [view("AW_1", "192.168.1.5:1", key="APIjack", owner="jack"),
               view("AW_2", "192.168.1.6:1", key="APIjack", owner="jack")]
    (found,) = find_crosstalk(workers, {})
    assert found.owner == "jack" and "developer 'jack'" in found.fix
