"""Each checker reports what it exists to catch, and stays quiet otherwise."""

from __future__ import annotations

from keeldb.consensus.sim.checkers import (
    AGREEMENT,
    DURABILITY,
    LINEARIZABILITY,
    LIVENESS,
    AgreementChecker,
    DurabilityChecker,
    HistoryRecorder,
    LivenessChecker,
    check_linearizability,
)
from keeldb.consensus.sim.kv import Command
from keeldb.consensus.sim.linearizability import OpKind
from keeldb.consensus.types import Entry, EntryKind


def _entry(text: bytes) -> Entry:
    return Entry(EntryKind.COMMAND, text)


def test_agreement_flags_a_slot_applied_with_two_values() -> None:
    checker = AgreementChecker()
    checker.observe(10, 1, _entry(b"a"), "n1")
    checker.observe(11, 1, _entry(b"a"), "n2")
    checker.observe(12, 2, _entry(b"b"), "n1")
    assert checker.violations == []
    checker.observe(13, 2, _entry(b"c"), "n3")
    assert [v.checker for v in checker.violations] == [AGREEMENT]
    assert "slot 2" in checker.violations[0].message
    assert "n1" in checker.violations[0].message
    assert "n3" in checker.violations[0].message


def test_agreement_shows_commands_as_what_they_do() -> None:
    checker = AgreementChecker()
    checker.observe(1, 5, _entry(Command(1, 2, OpKind.PUT, "k", b"v").encode()), "n1")
    checker.observe(2, 5, _entry(Command(3, 4, OpKind.GET, "k").encode()), "n2")
    assert "c1r2:put k=v" in checker.violations[0].message
    assert "c3r4:get k" in checker.violations[0].message


def test_durability_flags_an_acknowledged_command_a_replica_lacks() -> None:
    checker = DurabilityChecker()
    checker.acknowledge(100, 1, 1)
    checker.acknowledge(200, 1, 2)
    applied = {(1, 1)}
    checker.check_replica(300, "n1", lambda c, r: (c, r) in applied, acknowledged_before_us=150)
    assert checker.violations == []
    checker.check_replica(300, "n1", lambda c, r: (c, r) in applied, acknowledged_before_us=250)
    assert [v.checker for v in checker.violations] == [DURABILITY]
    assert "client 1 request 2" in checker.violations[0].message


def test_liveness_flags_requests_left_open_and_given_up_after_the_heal() -> None:
    history = HistoryRecorder()
    checker = LivenessChecker(bound_us=1000)
    history.invoke(10, 1, 1, OpKind.GET, "k", None, None)
    checker.abandoned(20, 1, 1, invoked_us=10)  # before the heal: not the protocol's fault
    assert checker.violations == []
    checker.healed(50)
    checker.abandoned(900, 2, 7, invoked_us=60)
    assert [v.checker for v in checker.violations] == [LIVENESS]
    checker.check_end(1050, history)
    assert len(checker.violations) == 2
    assert "client 1 request 1" in checker.violations[1].message


def test_liveness_is_quiet_when_every_request_finished() -> None:
    history = HistoryRecorder()
    checker = LivenessChecker(bound_us=1000)
    checker.healed(0)
    history.invoke(10, 1, 1, OpKind.PUT, "k", b"v", None)
    history.respond(1, 1, None)
    checker.check_end(1000, history)
    assert checker.violations == []


def test_recorded_history_of_a_stale_read_fails_linearizability() -> None:
    history = HistoryRecorder()
    history.invoke(0, 1, 1, OpKind.PUT, "k", b"new", None)
    history.respond(1, 1, None)
    history.invoke(0, 2, 1, OpKind.GET, "k", None, None)
    history.respond(2, 1, None)
    history.invoke(0, 3, 1, OpKind.PUT, "k", b"later", None)
    history.abandon(3, 1)
    result, violations = check_linearizability(5, history)
    assert not result.ok
    assert [v.checker for v in violations] == [LINEARIZABILITY]
    assert "get(k) -> None" in violations[0].message
