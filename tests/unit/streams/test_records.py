"""Stream records derived in the appliers (`keeldb.engine.streams`): which changes make a
record and what it holds, sequence numbers, replays, multi-item entries, TTL deletions,
index backfills, trimming and `wait_for_records`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.engine import catalog, item_store, streams, ttl
from keeldb.engine.database import Database
from keeldb.storage.memory import MemoryLog, MemoryStore


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(text: str) -> dict[str, str]:
    return {"N": text}


def events(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records]


# --- Which changes make a record ------------------------------------------------------------


def test_put_update_delete_make_insert_modify_remove(h: Any) -> None:
    arn = h.create()
    h.put({"pk": s("a"), "v": n("1")})
    h(
        "UpdateItem",
        {
            "TableName": "tbl",
            "Key": {"pk": s("a")},
            "UpdateExpression": "SET w = :x",
            "ExpressionAttributeValues": {":x": s("x")},
        },
    )
    h("DeleteItem", {"TableName": "tbl", "Key": {"pk": s("a")}})
    records = h.records(arn)
    assert events(records) == [("INSERT", "a"), ("MODIFY", "a"), ("REMOVE", "a")]
    assert records[1]["dynamodb"]["OldImage"] == {"pk": s("a"), "v": n("1")}
    assert records[1]["dynamodb"]["NewImage"] == {"pk": s("a"), "v": n("1"), "w": s("x")}


def test_a_table_without_a_stream_writes_no_record(h: Any) -> None:
    h.create("plain", view=None)
    h.put({"pk": s("a")}, name="plain")
    assert streams.list_streams(h.db) == []
    assert list(h.store.scan(streams.STREAM_PREFIX, b"t")) == []


@pytest.mark.parametrize(
    "write",
    [
        ("PutItem", {"Item": {"pk": s("a"), "v": n("1.00"), "ss": {"SS": ["b", "a"]}}}),
        (
            "UpdateItem",
            {
                "Key": {"pk": s("a")},
                "UpdateExpression": "SET v = :v",
                "ExpressionAttributeValues": {":v": n("1")},
            },
        ),
        ("UpdateItem", {"Key": {"pk": s("a")}, "UpdateExpression": "REMOVE absent_attribute"}),
        ("DeleteItem", {"Key": {"pk": s("nothing-here")}}),
    ],
)
def test_a_write_that_changes_nothing_makes_no_record(h: Any, write: Any) -> None:
    arn = h.create()
    h.put({"pk": s("a"), "v": n("1"), "ss": {"SS": ["a", "b"]}})
    operation, body = write
    h(operation, {"TableName": "tbl", **body})
    assert events(h.records(arn)) == [("INSERT", "a")]


@pytest.mark.parametrize(
    ("view", "members"),
    [
        ("KEYS_ONLY", {"Keys"}),
        ("NEW_IMAGE", {"Keys", "NewImage"}),
        ("OLD_IMAGE", {"Keys", "OldImage"}),
        ("NEW_AND_OLD_IMAGES", {"Keys", "NewImage", "OldImage"}),
    ],
)
def test_a_modify_carries_the_images_of_its_view_type(h: Any, view: str, members: set[str]) -> None:
    arn = h.create(view=view)
    h.put({"pk": s("a"), "v": n("1")})
    h.put({"pk": s("a"), "v": n("2")})
    change = h.records(arn)[1]["dynamodb"]
    images = {k for k in change if k in ("Keys", "NewImage", "OldImage")}
    assert images == members
    assert change["StreamViewType"] == view
    # SizeBytes counts the keys and the images the record carries.
    expected = 3  # "pk" + "a"
    if "NewImage" in members:
        expected += 3 + 3  # pk=a (2 + 1), v=2 (1 + a one-digit number: 2)
    if "OldImage" in members:
        expected += 3 + 3
    assert change["SizeBytes"] == expected


def test_batch_write_makes_one_record_per_item(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    h(
        "BatchWriteItem",
        {
            "RequestItems": {
                "tbl": [{"PutRequest": {"Item": {"pk": s(f"k{i}")}}} for i in range(5)]
                + [{"DeleteRequest": {"Key": {"pk": s("absent")}}}]
            }
        },
    )
    assert sorted(events(h.records(arn))) == [("INSERT", f"k{i}") for i in range(5)]


def test_a_ttl_deletion_carries_the_service_identity(h: Any) -> None:
    arn = h.create()
    h(
        "UpdateTimeToLive",
        {"TableName": "tbl", "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "exp"}},
    )
    h.put({"pk": s("old"), "exp": n(str(int(h.clock.now) - 10))})
    result = h.run(ttl.sweep(h.db))
    assert result.deleted_items == 1
    records = h.records(arn)
    assert events(records) == [("INSERT", "old"), ("REMOVE", "old")]
    assert "userIdentity" not in records[0]
    assert records[1]["userIdentity"] == {
        "Type": "Service",
        "PrincipalId": "dynamodb.amazonaws.com",
    }


def test_a_clients_delete_has_no_user_identity(h: Any) -> None:
    arn = h.create()
    h.put({"pk": s("a")})
    h("DeleteItem", {"TableName": "tbl", "Key": {"pk": s("a")}})
    assert all("userIdentity" not in r for r in h.records(arn))


def test_an_index_backfill_makes_no_record(h: Any) -> None:
    arn = h.create()
    for i in range(5):
        h.put({"pk": s(f"k{i}"), "g": s("x")})
    h(
        "UpdateTable",
        {
            "TableName": "tbl",
            "AttributeDefinitions": [{"AttributeName": "g", "AttributeType": "S"}],
            "GlobalSecondaryIndexUpdates": [
                {
                    "Create": {
                        "IndexName": "byg",
                        "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                }
            ],
        },
    )
    from keeldb.engine import indexes

    steps = 0
    while h.run(indexes.step(h.db)):
        steps += 1
    assert steps >= 1
    assert len(h.records(arn)) == 5


# --- Sequence numbers, replays and multi-item entries ---------------------------------------


def test_sequence_numbers_are_21_digit_decimals_increasing_in_log_order(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    for i in range(20):
        h.put({"pk": s(f"k{i % 3}"), "i": n(str(i))})
    numbers = [r["dynamodb"]["SequenceNumber"] for r in h.records(arn)]
    assert len(numbers) == 20
    assert all(len(x) == 21 and x.isdigit() for x in numbers)
    assert [int(x) for x in numbers] == sorted(int(x) for x in numbers)
    assert len(set(numbers)) == 20


def test_replaying_the_log_rebuilds_the_same_records_once(h: Any) -> None:
    arn = h.create()
    for i in range(6):
        h.put({"pk": s(f"k{i % 2}"), "i": n(str(i))})
    before = h.records(arn)
    # Replaying entries the store already holds changes nothing.
    h.db.apply(h.log.entries)
    assert h.records(arn) == before
    # A fresh store that replays the whole log holds exactly the same records.
    store = MemoryStore()
    db = Database(store)
    db.state[catalog.CLOCK_STATE_KEY] = h.clock
    db.attach_log(MemoryLog(db.apply, start_lsn=0))
    db.apply(h.log.entries)
    assert list(store.scan(streams.STREAM_PREFIX, b"t")) == list(
        h.store.scan(streams.STREAM_PREFIX, b"t")
    )


def test_several_items_of_one_entry_get_consecutive_positions(h: Any) -> None:
    """A multi-item applier calls `_item_write` once per item before its one store write."""
    arn = h.create(view="KEYS_ONLY")
    table = catalog.find_table(h.db, "tbl")
    assert table is not None
    puts: list[tuple[bytes, bytes]] = []
    deletes: list[bytes] = []
    lsn = h.store.applied_lsn() + 1
    for key in ("x", "y", "z"):
        image = {"pk": s(key)}
        skey = item_store.storage_key(table, image)
        record = {
            "kind": "put",
            "table": table.table_id,
            "name": "tbl",
            "key": skey,
            "item": image,
            "size": 2,
        }
        p, d = item_store._item_write(h.db, table, skey, record)
        puts += p
        deletes += d
    h.store.write(puts, deletes, applied_lsn=lsn)
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in h.records(arn)]
    base = streams.SEQUENCE_BASE + streams.entry_position(lsn)
    assert numbers == [base, base + 1, base + 2]
    assert events(h.records(arn)) == [("INSERT", "x"), ("INSERT", "y"), ("INSERT", "z")]


# --- Descriptors ----------------------------------------------------------------------------


def test_enabling_a_stream_by_update_table_starts_a_stream_after_that_entry(h: Any) -> None:
    h.create(view=None)
    h.put({"pk": s("before")})
    h(
        "UpdateTable",
        {
            "TableName": "tbl",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
        },
    )
    h.put({"pk": s("after")})
    assert events(h.records(h.arn())) == [("INSERT", "after")]


def test_a_deleted_table_keeps_its_stream_disabled_with_a_closed_shard(h: Any) -> None:
    arn = h.create()
    h.put({"pk": s("a")})
    h("DeleteTable", {"TableName": "tbl"})
    (stream,) = streams.list_streams(h.db)
    assert stream.status == streams.STATUS_DISABLED
    assert stream.disabled_ms == int(h.clock.now * 1000)
    assert stream.shards[0].closed is not None
    assert events(h.records(arn)) == [("INSERT", "a")]


# --- Trimming -------------------------------------------------------------------------------


def trim(h: Any, before_ms: int, records_max: int = streams.TRIM_RECORDS_PER_ENTRY_MAX) -> None:
    record = streams.plan_trim(h.db, before_ms, records_max)
    assert record is not None
    h.run(h.db.propose(record))


def test_trim_removes_old_records_and_moves_the_trim_horizon(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    h.put({"pk": s("old")})
    h.clock.now += 100
    h.put({"pk": s("new")})
    stale = h.iterator(arn)  # resolved at the horizon before trimming
    old_sequence = h.records(arn)[0]["dynamodb"]["SequenceNumber"]
    before_ms = int((h.clock.now - 50) * 1000)
    assert streams.trim_pending(h.db, before_ms)
    trim(h, before_ms)
    assert not streams.trim_pending(h.db, before_ms)
    assert events(h.records(arn)) == [("INSERT", "new")]
    error = h.api_error("GetRecords", {"ShardIterator": stale})
    assert type(error).__name__ == "TrimmedDataAccessException"
    assert error.message == "The data you are trying to access has been trimmed."
    error = h.api_error(
        "GetShardIterator",
        {
            "StreamArn": arn,
            "ShardId": h.shard_id(arn),
            "ShardIteratorType": "AT_SEQUENCE_NUMBER",
            "SequenceNumber": old_sequence,
        },
    )
    assert type(error).__name__ == "TrimmedDataAccessException"
    # AFTER the trimmed record is still a valid place to start.
    after = h.records(arn, "AFTER_SEQUENCE_NUMBER", SequenceNumber=old_sequence)
    assert events(after) == [("INSERT", "new")]


def test_trim_is_bounded_per_entry(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    for i in range(5):
        h.put({"pk": s(f"k{i}")})
    h.clock.now += 100
    before_ms = int(h.clock.now * 1000)
    trim(h, before_ms, 2)
    assert len(h.records(arn)) == 3
    trim(h, before_ms, 2)
    assert len(h.records(arn)) == 1


def test_a_disabled_stream_is_forgotten_once_retention_passed_and_its_records_are_gone(
    h: Any,
) -> None:
    arn = h.create()
    h.put({"pk": s("a")})
    h("DeleteTable", {"TableName": "tbl"})
    h.clock.now += 10
    trim(h, int(h.clock.now * 1000))
    assert streams.list_streams(h.db) == []
    error = h.api_error("DescribeStream", {"StreamArn": arn})
    assert type(error).__name__ == "ResourceNotFoundException"


# --- Iterators ------------------------------------------------------------------------------


def test_an_iterator_expires_after_15_minutes(h: Any) -> None:
    arn = h.create()
    position = h.iterator(arn)
    h.clock.now += 15 * 60
    assert h.api("GetRecords", {"ShardIterator": position})["Records"] == []
    h.clock.now += 1
    error = h.api_error("GetRecords", {"ShardIterator": position})
    assert type(error).__name__ == "ExpiredIteratorException"
    assert error.message == "The provided iterator exceeds the maximum age allowed."


def test_next_shard_iterators_are_fresh(h: Any) -> None:
    arn = h.create()
    position = h.iterator(arn)
    for _ in range(3):
        h.clock.now += 10 * 60
        position = h.api("GetRecords", {"ShardIterator": position})["NextShardIterator"]


def test_get_records_stops_at_one_megabyte(h: Any) -> None:
    arn = h.create(view="NEW_IMAGE")
    blob = "x" * 350_000
    for i in range(4):
        h.put({"pk": s(f"k{i}"), "blob": s(blob)})
    page = h.api("GetRecords", {"ShardIterator": h.iterator(arn)})
    assert len(page["Records"]) == 2
    rest = h.api("GetRecords", {"ShardIterator": page["NextShardIterator"]})
    assert len(rest["Records"]) == 2


# --- Waiting for records --------------------------------------------------------------------


def test_wait_for_records_wakes_on_a_record_and_times_out_without_one(h: Any) -> None:
    h.create()

    async def scenario() -> tuple[bool, bool, bool]:
        quiet = await streams.wait_for_records(h.db, 0.01)
        waiter = asyncio.ensure_future(streams.wait_for_records(h.db, 30))
        await asyncio.sleep(0)
        await h.db.dispatch("PutItem", {"TableName": "tbl", "Item": {"pk": s("a")}})
        woke = await asyncio.wait_for(waiter, 5)
        # A write that makes no record wakes nobody.
        waiter = asyncio.ensure_future(streams.wait_for_records(h.db, 0.05))
        await asyncio.sleep(0)
        await h.db.dispatch("PutItem", {"TableName": "tbl", "Item": {"pk": s("a")}})
        unchanged = await waiter
        return quiet, woke, unchanged

    assert h.run(scenario()) == (False, True, False)
    assert streams.streams_state(h.db).waiters == []


def test_the_clock_hook_key_is_the_catalogs() -> None:
    assert streams.CLOCK_STATE_KEY == catalog.CLOCK_STATE_KEY


scalar = st.one_of(
    st.builds(lambda t: {"S": t}, st.sampled_from(["", "a", "b"])),
    st.builds(lambda t: {"N": t}, st.sampled_from(["0", "1", "-2", "1.5"])),
    st.builds(lambda t: {"BOOL": t}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda t: {"SS": t}, st.lists(st.sampled_from("abc"), min_size=1, unique=True)),
    st.builds(
        lambda t: {"NS": t}, st.lists(st.sampled_from(["1", "2", "3"]), min_size=1, unique=True)
    ),
)
value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.builds(lambda t: {"L": t}, st.lists(inner, max_size=3)),
        st.builds(lambda t: {"M": t}, st.dictionaries(st.sampled_from("xy"), inner, max_size=2)),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(value, value, st.randoms())
def test_no_change_detection_agrees_with_dynamodb_equality(a: Any, b: Any, rnd: Any) -> None:
    def shuffled(v: Any) -> Any:
        ((kind, x),) = v.items()
        if kind in ("SS", "NS"):
            x = list(x)
            rnd.shuffle(x)
        elif kind == "L":
            x = [shuffled(e) for e in x]
        elif kind == "M":
            x = {k: shuffled(e) for k, e in x.items()}
        return {kind: x}

    from keeldb.model.values import values_equal

    assert streams._same_value(a, b) == values_equal(a, b)
    assert streams._same_value(a, shuffled(a))
    assert streams._same_item({"pk": s("k"), "v": a}, {"pk": s("k"), "v": b}) == values_equal(a, b)


# --- Shard rollover -------------------------------------------------------------------------


def roll(h: Any) -> None:
    (stream,) = [x for x in streams.list_streams(h.db) if x.status == streams.STATUS_ENABLED]
    h.run(h.db.propose(streams.roll_record(stream.table_id, stream.label, int(h.clock.now * 1000))))


def test_a_rollover_closes_the_shard_and_opens_a_child_that_names_it(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    h.put({"pk": s("before")})
    h.clock.now += 5
    roll(h)
    h.put({"pk": s("after")})
    shards = h.api("DescribeStream", {"StreamArn": arn})["StreamDescription"]["Shards"]
    parent, child = shards
    assert "ParentShardId" not in parent
    assert child["ParentShardId"] == parent["ShardId"]
    assert child["ShardId"] != parent["ShardId"]
    ending = int(parent["SequenceNumberRange"]["EndingSequenceNumber"])
    assert int(child["SequenceNumberRange"]["StartingSequenceNumber"]) == ending
    assert "EndingSequenceNumber" not in child["SequenceNumberRange"]
    children = h.api(
        "DescribeStream",
        {"StreamArn": arn, "ShardFilter": {"Type": "CHILD_SHARDS", "ShardId": parent["ShardId"]}},
    )["StreamDescription"]["Shards"]
    assert children == [child]

    def read(shard_id: str) -> tuple[list[str], dict[str, Any]]:
        position = h.api(
            "GetShardIterator",
            {"StreamArn": arn, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"},
        )["ShardIterator"]
        page = h.api("GetRecords", {"ShardIterator": position})
        return [r["dynamodb"]["Keys"]["pk"]["S"] for r in page["Records"]], page

    keys, page = read(parent["ShardId"])
    assert keys == ["before"]
    assert "NextShardIterator" not in page  # the parent is finished
    keys, page = read(child["ShardId"])
    assert keys == ["after"]
    assert "NextShardIterator" in page


def test_rollover_is_due_only_for_enabled_streams_with_an_old_open_shard(h: Any) -> None:
    h.create("tbl-a", view="KEYS_ONLY")
    h.create("tbl-b", view="KEYS_ONLY")
    h("UpdateTable", {"TableName": "tbl-b", "StreamSpecification": {"StreamEnabled": False}})
    now_ms = int(h.clock.now * 1000)
    assert streams.roll_pending(h.db, now_ms + 999, 1000) == []
    due = streams.roll_pending(h.db, now_ms + 1000, 1000)
    assert [catalog.get_table_by_id(h.db, t).name for t, _ in due] == ["tbl-a"]  # type: ignore[union-attr]


def test_a_roll_for_a_stream_disabled_meanwhile_changes_nothing(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    (stream,) = streams.list_streams(h.db)
    h("UpdateTable", {"TableName": "tbl", "StreamSpecification": {"StreamEnabled": False}})
    before = streams.list_streams(h.db)
    h.run(h.db.propose(streams.roll_record(stream.table_id, stream.label, 0)))
    assert streams.list_streams(h.db) == before
    assert len(h.api("DescribeStream", {"StreamArn": arn})["StreamDescription"]["Shards"]) == 1


def test_a_closed_shard_is_forgotten_once_its_records_are_trimmed(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    h.put({"pk": s("old")})
    h.clock.now += 10
    roll(h)
    h.clock.now += 10
    h.put({"pk": s("new")})
    horizon = int((h.clock.now - 5) * 1000)
    assert streams.trim_pending(h.db, horizon)
    trim(h, horizon)
    assert not streams.trim_pending(h.db, horizon)
    (shard,) = h.api("DescribeStream", {"StreamArn": arn})["StreamDescription"]["Shards"]
    assert "ParentShardId" in shard  # the parent is gone, its name stays
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in h.records(arn)] == ["new"]


def test_rolled_shards_survive_a_replay_of_the_log(h: Any) -> None:
    h.create(view="KEYS_ONLY")
    h.put({"pk": s("a")})
    roll(h)
    h.put({"pk": s("b")})
    roll(h)
    h.put({"pk": s("c")})
    store = MemoryStore()
    db = Database(store)
    db.state[catalog.CLOCK_STATE_KEY] = h.clock
    db.attach_log(MemoryLog(db.apply, start_lsn=0))
    db.apply(h.log.entries)
    assert list(store.scan(streams.STREAM_PREFIX, b"t")) == list(
        h.store.scan(streams.STREAM_PREFIX, b"t")
    )
    (stream,) = streams.list_streams(db)
    assert [x.number for x in stream.shards] == [0, 1, 2]
    assert [len(streams.read_records(db, stream, x, -1, 10)) for x in stream.shards] == [1, 1, 1]


def test_describe_stream_pages_rolled_shards_one_at_a_time_in_creation_order(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    for _ in range(3):
        h.clock.now += 1
        roll(h)
    everything = h.api("DescribeStream", {"StreamArn": arn})["StreamDescription"]["Shards"]
    assert len(everything) == 4
    paged: list[Any] = []
    body: dict[str, Any] = {"StreamArn": arn, "Limit": 1}
    while True:
        description = h.api("DescribeStream", body)["StreamDescription"]
        paged += description["Shards"]
        if "LastEvaluatedShardId" not in description:
            break
        body["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]
    assert paged == everything
    assert [s.get("ParentShardId") for s in everything[1:]] == [
        s["ShardId"] for s in everything[:-1]
    ]


def test_an_iterator_of_a_forgotten_shard_reports_trimmed_data(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    h.put({"pk": s("old")})
    first_shard = h.shard_id(arn)
    stale = h.iterator(arn)
    h.clock.now += 10
    roll(h)
    h.clock.now += 10
    trim(h, int((h.clock.now - 5) * 1000))
    assert h.shard_id(arn) != first_shard
    error = h.api_error("GetRecords", {"ShardIterator": stale})
    assert type(error).__name__ == "TrimmedDataAccessException"


def test_shard_numbers_past_one_byte_keep_their_records_apart(h: Any) -> None:
    arn = h.create(view="KEYS_ONLY")
    for i in range(258):
        h.put({"pk": s(f"k{i}")})
        roll(h)
    (stream,) = streams.list_streams(h.db)
    counts = {x.number: len(streams.read_records(h.db, stream, x, -1, 5)) for x in stream.shards}
    assert counts == {**{n: 1 for n in range(258)}, 258: 0}
    assert stream.open_shard() is not None
    assert stream.open_shard().number == 258  # type: ignore[union-attr]
    page = h.api("DescribeStream", {"StreamArn": arn})["StreamDescription"]
    assert len(page["Shards"]) == 100  # DescribeStream's page limit
    assert "LastEvaluatedShardId" in page


# --- Only committed changes -----------------------------------------------------------------


class HeldLog:
    """A log that commits an entry only when the test releases it, or fails it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.lsn = 0
        self.held: list[tuple[bytes, asyncio.Future[None]]] = []

    async def append(self, record: bytes) -> int:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.held.append((record, gate))
        await gate
        self.lsn += 1
        self.db.apply([(self.lsn, record)])
        return self.lsn

    def release(self, fail: bool = False) -> None:
        _, gate = self.held.pop(0)
        if fail:
            gate.set_exception(OSError("the log refused the record"))
        else:
            gate.set_result(None)

    def committed_lsn(self) -> int:
        return self.lsn

    async def close(self) -> None:
        return None


def test_a_proposed_change_appears_only_once_committed_and_a_failed_one_never(h: Any) -> None:
    arn = h.create(view="NEW_IMAGE")
    held = HeldLog(h.db)
    held.lsn = h.store.applied_lsn()
    h.db._log = held

    async def scenario() -> None:
        first = asyncio.ensure_future(
            h.db.dispatch("PutItem", {"TableName": "tbl", "Item": {"pk": s("a"), "v": n("1")}})
        )
        await asyncio.sleep(0)
        assert len(held.held) == 1
        assert (await h.streams("GetRecords", {"ShardIterator": position}))["Records"] == []
        held.release()
        await first
        second = asyncio.ensure_future(
            h.db.dispatch("PutItem", {"TableName": "tbl", "Item": {"pk": s("b"), "v": n("2")}})
        )
        await asyncio.sleep(0)
        held.release(fail=True)
        with pytest.raises(OSError):
            await second

    position = h.iterator(arn)
    h.run(scenario())
    assert events(h.records(arn)) == [("INSERT", "a")]


def test_a_stream_enabled_without_the_catalogs_appliers_gets_its_descriptor_at_its_first_write(
    h: Any,
) -> None:
    """An applier of another module may write a table entry with a stream (a restore, say)."""
    h.create(view=None)
    table = catalog.find_table(h.db, "tbl")
    assert table is not None
    streamed = table.evolve(
        stream_enabled=True, stream_view_type="KEYS_ONLY", stream_label="2027-01-15T08:00:00.000"
    )
    h.store.write([catalog.table_entry(streamed)], [], applied_lsn=h.store.applied_lsn())
    catalog.remember(h.db, streamed)
    assert streams.list_streams(h.db) == []
    h.put({"pk": s("a")})
    h.put({"pk": s("b")})
    (stream,) = streams.list_streams(h.db)
    assert stream.status == streams.STATUS_ENABLED
    assert events(h.records(h.arn())) == [("INSERT", "a"), ("INSERT", "b")]


def test_an_entry_replayed_after_writing_part_of_its_items_keeps_every_record_once(h: Any) -> None:
    """An applier may write each item of an entry in a store write of its own (the earlier
    ones at lsn - 1), so a crash can leave part of the entry written; the replay rewrites
    the first items unchanged and the others must take the positions they would have had."""
    arn = h.create(view="KEYS_ONLY")
    table = catalog.find_table(h.db, "tbl")
    assert table is not None
    lsn = h.store.applied_lsn() + 1
    images = [{"pk": s(f"k{i}")} for i in range(4)]

    def apply(db: Database, upto: int) -> None:
        for number, image in enumerate(images[:upto], start=1):
            skey = item_store.storage_key(table, image)
            record = {
                "kind": "put",
                "table": table.table_id,
                "name": "tbl",
                "key": skey,
                "item": image,
                "size": 5,
            }
            puts, deletes = item_store._item_write(db, table, skey, record)
            db.store.write(puts, deletes, applied_lsn=lsn if number == len(images) else lsn - 1)

    apply(h.db, 2)  # the first two items, then the process dies
    restarted = Database(h.store)
    restarted.attach_log(MemoryLog(restarted.apply, start_lsn=lsn - 1))
    apply(restarted, 4)  # the replay writes all four
    assert h.store.applied_lsn() == lsn
    base = streams.SEQUENCE_BASE + streams.entry_position(lsn)
    got = [
        (r["dynamodb"]["Keys"]["pk"]["S"], int(r["dynamodb"]["SequenceNumber"]))
        for r in h.records(arn)
    ]
    assert got == [(f"k{i}", base + i) for i in range(4)]


def test_replicas_with_other_clocks_trim_exactly_the_same_records(h: Any) -> None:
    """The trim record names positions, so a replica whose clock reads other times for the
    same records still removes exactly what the proposer decided."""
    h.create(view="KEYS_ONLY")
    for i in range(6):
        h.put({"pk": s(f"k{i}")})
        h.clock.now += 10
    roll(h)
    h.put({"pk": s("late")})
    trim(h, int((h.clock.now - 25) * 1000))
    replica_store = MemoryStore()
    replica = Database(replica_store)
    replica.state[catalog.CLOCK_STATE_KEY] = lambda: h.clock.now + 3600.0  # an hour apart
    replica.attach_log(MemoryLog(replica.apply, start_lsn=0))
    replica.apply(h.log.entries)

    def record_keys(store: Any) -> list[bytes]:
        prefix = streams.STREAM_PREFIX + streams.RECORD_TAG
        return [key for key, _ in store.scan(prefix, streams.STREAM_PREFIX + b"s")]

    assert record_keys(replica_store) == record_keys(h.store)
    assert len(record_keys(h.store)) == 3  # k4, k5 and "late" are younger than the horizon
    ((mine,), (theirs,)) = (streams.list_streams(h.db), streams.list_streams(replica))
    assert [(x.number, x.trimmed, x.closed) for x in mine.shards] == [
        (x.number, x.trimmed, x.closed) for x in theirs.shards
    ]
