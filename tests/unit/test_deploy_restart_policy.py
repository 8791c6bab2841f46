"""The supervisor's back-off between restarts of one process."""

from __future__ import annotations

from rrr.deploy.supervisor import ProcessRecord, RestartPolicy


def test_restart_delays_double_from_one_second_up_to_thirty() -> None:
    policy = RestartPolicy()

    assert [policy.delay_s(failures) for failures in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_restart_delay_stays_at_the_cap_however_many_restarts_failed() -> None:
    assert RestartPolicy(first_s=0.5, cap_s=10).delay_s(10_000) == 10


def test_a_process_never_restarted_has_no_history_to_show() -> None:
    assert ProcessRecord(pid=42).history() is None


def test_a_restarted_process_shows_when_and_why() -> None:
    record = ProcessRecord(restarts=2, last_restart="2024-05-01T10:00:00Z", last_exit="killed by SIGKILL")

    assert record.history() == "restarted 2 times, last at 2024-05-01T10:00:00Z, last exit: killed by SIGKILL"
