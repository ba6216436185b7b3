"""DurableState.replay: the hard state rebuilt from persisted records, torn tails included."""

from __future__ import annotations

from keeldb.consensus.harness import Harness
from keeldb.consensus.messages import (
    AcceptRecord,
    ChosenRecord,
    CommitRecord,
    PromiseRecord,
    SnapshotRecord,
)
from keeldb.consensus.replica import DurableState, Options
from keeldb.consensus.types import (
    Ballot,
    Config,
    Entry,
    EntryKind,
    LogEntry,
    NodeId,
    Slot,
    Snapshot,
)

B1 = Ballot(1, NodeId(1))
B2 = Ballot(2, NodeId(2))


def _cmd(text: str) -> Entry:
    return Entry(EntryKind.COMMAND, text.encode())


def test_replay_of_nothing_is_a_fresh_state() -> None:
    state = DurableState.replay([])
    assert (state.promised.round, state.commit_slot, state.log, state.snapshot) == (0, 0, {}, None)


def test_replay_rebuilds_promise_votes_and_commit_point() -> None:
    records = [
        PromiseRecord(B1),
        AcceptRecord(LogEntry(Slot(1), B1, _cmd("a"))),
        AcceptRecord(LogEntry(Slot(2), B1, _cmd("b"))),
        CommitRecord(Slot(1)),
        PromiseRecord(B2),
    ]
    state = DurableState.replay(records)
    assert state.promised == B2
    assert state.commit_slot == 1
    assert state.log[Slot(2)] == LogEntry(Slot(2), B1, _cmd("b"))


def test_replay_never_lowers_the_promise() -> None:
    state = DurableState.replay([PromiseRecord(B2), PromiseRecord(B1)])
    assert state.promised == B2


def test_a_torn_run_of_chosen_records_still_counts_as_chosen() -> None:
    records = [ChosenRecord(Slot(1), _cmd("a")), ChosenRecord(Slot(2), _cmd("b"))]
    assert DurableState.replay(records).commit_slot == 2


def test_replay_drops_entries_covered_by_a_snapshot() -> None:
    config = Config.standard([1, 2, 3])
    records = [
        AcceptRecord(LogEntry(Slot(1), B1, _cmd("a"))),
        AcceptRecord(LogEntry(Slot(2), B1, _cmd("b"))),
        AcceptRecord(LogEntry(Slot(3), B1, _cmd("c"))),
        CommitRecord(Slot(3)),
        SnapshotRecord(Snapshot(Slot(2), ((Slot(3), config),), b"a\nb")),
    ]
    state = DurableState.replay(records)
    assert sorted(state.log) == [3]
    assert state.snapshot is not None and state.snapshot.slot == 2


def _busy_disk() -> list[object]:
    h = Harness(Config.standard([1, 2, 3]), options=Options())
    h.elect(1)
    for i in range(5):
        h.propose(1, f"v{i}".encode())
        h.deliver_all()
    h.run(3)
    return list(h.nodes[NodeId(2)].synced)


def test_every_prefix_of_a_disk_replays_to_a_state_no_newer_than_the_whole() -> None:
    records = _busy_disk()
    full = DurableState.replay(records)  # type: ignore[arg-type]
    last_commit = 0
    for n in range(len(records) + 1):
        state = DurableState.replay(records[:n])  # type: ignore[arg-type]
        assert state.commit_slot >= last_commit
        assert state.commit_slot <= full.commit_slot
        assert state.promised <= full.promised
        for slot in range(1, state.commit_slot + 1):
            assert Slot(slot) in state.log
        last_commit = state.commit_slot
    assert full.commit_slot == 5


def test_compact_records_replay_to_the_same_state() -> None:
    full = DurableState.replay(_busy_disk())  # type: ignore[arg-type]
    again = DurableState.replay(full.records())
    assert again == full


def test_a_restart_hands_out_the_snapshot_then_the_chosen_entries_after_it() -> None:
    h = Harness(Config.standard([1, 2, 3]), options=Options(log_entries_retained=0))
    h.elect(1)
    for name in (b"a", b"b"):
        h.propose(1, name)
    h.run(2)
    h.snapshot(2)
    h.propose(1, b"c")
    h.run(2)
    h.crash(2)
    h.take_events()
    h.restart(2)
    assert h.take_events()[:3] == [
        "2: install snapshot 2",
        "2: apply 3 cmd(c)",
        "2: down -> follower 1.1",
    ]
    assert h.nodes[NodeId(2)].state == [b"a", b"b", b"c"]


def test_proposal_ids_never_repeat_across_restarts() -> None:
    h = Harness(Config.single(1))
    h.elect(1)
    first = h.propose(1, b"a")
    h.crash(1)
    h.restart(1)
    h.elect(1)
    second = h.propose(1, b"b")
    assert first is not None and second is not None
    assert first != second
    assert h.nodes[NodeId(1)].acknowledged == [first, second]


def test_a_restarted_group_of_one_serves_at_once() -> None:
    h = Harness(Config.single(1))
    h.elect(1)
    h.propose(1, b"a")
    h.crash(1)
    h.restart(1)
    h.elect(1)
    h.propose(1, b"b")
    assert h.replica(1).read_lease()
    assert h.nodes[NodeId(1)].state == [b"a", b"b"]
