"""Secondary indexes driven through `Database.dispatch` over an in-memory store and log: the
entries each write leaves in every index (sparse, projected, moved, removed), their statistics,
the capacity they cost, item collections, and global indexes added and deleted by UpdateTable
with their logged backfill and drop, replayed after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from keeldb.engine import catalog, indexes, paging
from keeldb.engine.database import Database, decode_record
from keeldb.engine.item_store import decode_stored
from keeldb.model.errors import (
    ClientError,
    ItemCollectionSizeLimitExceededException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from keeldb.model.keys import index_bounds, index_item_key, table_bounds
from keeldb.model.values import item_size
from keeldb.storage.memory import MemoryLog, MemoryStore

Item = dict[str, Any]


class RecordingLog(MemoryLog):
    """A MemoryLog that keeps every entry, so a test can replay the log into a new store."""

    def __init__(self, apply: Any) -> None:
        super().__init__(apply)
        self.entries: list[tuple[int, bytes]] = []

    async def append(self, record: bytes) -> int:
        self.entries.append((self.committed_lsn() + 1, record))
        return await super().append(record)


class Harness:
    """A database over a MemoryStore and a recording MemoryLog, with a private event loop.
    The background backfill task is held off (a pending future stands in for it) so that a
    test decides when each backfill batch runs."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.db = Database(self.store)
        self.log = RecordingLog(self.db.apply)
        self.db.attach_log(self.log)
        self.loop = asyncio.new_event_loop()
        self.db.state[indexes.STATE_KEY] = self.loop.create_future()

    def __call__(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.loop.run_until_complete(self.db.dispatch(operation, body))

    def error(self, operation: str, body: dict[str, Any]) -> ClientError:
        before = list(self.store.scan(b"", None))
        with pytest.raises(ClientError) as caught:
            self(operation, body)
        assert list(self.store.scan(b"", None)) == before
        return caught.value

    def step(self) -> bool:
        return self.loop.run_until_complete(indexes.step(self.db))

    def backfill(self) -> int:
        """Run background index work to the end; the number of records it proposed."""
        steps = 0
        while self.step():
            steps += 1
        return steps

    def table(self, name: str = "tbl") -> Any:
        from keeldb.engine.catalog import find_table

        return find_table(self.db, name)

    def put(self, item: Item, table: str = "tbl", **extra: Any) -> dict[str, Any]:
        return self("PutItem", {"TableName": table, "Item": item, **extra})

    def describe(self, table: str = "tbl") -> dict[str, Any]:
        return self("DescribeTable", {"TableName": table})["Table"]

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(text: str) -> dict[str, str]:
    return {"N": text}


def create_indexed(h: Harness, name: str = "tbl", **extra: Any) -> None:
    """pk/sk table; LSI by_l (l: N, KEYS_ONLY); GSI by_g (g: S, INCLUDE [inc]); GSI by_gr
    (g: S hash, r: N range, ALL)."""
    h(
        "CreateTable",
        {
            "TableName": name,
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "l", "AttributeType": "N"},
                {"AttributeName": "g", "AttributeType": "S"},
                {"AttributeName": "r", "AttributeType": "N"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
            "LocalSecondaryIndexes": [
                {
                    "IndexName": "by_l",
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "l", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": "by_g",
                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["inc"]},
                },
                {
                    "IndexName": "by_gr",
                    "KeySchema": [
                        {"AttributeName": "g", "KeyType": "HASH"},
                        {"AttributeName": "r", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
            ],
            **extra,
        },
    )


def create_plain(h: Harness, name: str = "tbl") -> None:
    h(
        "CreateTable",
        {
            "TableName": name,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )


# --- A reference: what each index must hold, computed from the base items alone -------------


def base_items(h: Harness, name: str = "tbl") -> list[Item]:
    table = h.table(name)
    start, end = index_bounds(table.table_id, 0)
    return [decode_stored(data)[0] for _, data in h.store.scan(start, end)]


def expected_entries(table: Any, index: Any, items: list[Item]) -> dict[bytes, Item]:
    """Entries by store key, derived the slow, obvious way."""
    out: dict[bytes, Item] = {}
    for item in items:
        values = []
        for attribute in (index.hash_key, index.range_key):
            if attribute is None:
                continue
            value = item.get(attribute.name)
            if value is None or attribute.type not in value or value[attribute.type] == "":
                break
            values.append(value)
        else:
            names = set(table.key_names) | set(index.key_names)
            if index.projection_type == "INCLUDE":
                names |= set(index.non_key_attributes)
            image = (
                item
                if index.projection_type == "ALL"
                else {k: v for k, v in item.items() if k in names}
            )
            key = index_item_key(
                table.table_id,
                paging.index_id(table, index),
                values[0],
                values[1] if len(values) > 1 else None,
                item[table.hash_key.name],
                None if table.range_key is None else item[table.range_key.name],
            )
            out[key] = image
    return out


def stored_entries(h: Harness, table: Any, index: Any) -> dict[bytes, Item]:
    start, end = index_bounds(table.table_id, indexes.index_id(table, index))
    return {key: decode_stored(data)[0] for key, data in h.store.scan(start, end)}


def check_indexes_match_items(h: Harness, name: str = "tbl") -> None:
    """Every index holds exactly the reference's entries, and its statistics count them."""
    table = h.table(name)
    items = base_items(h, name)
    for index in table.local_indexes + table.global_indexes:
        entries = stored_entries(h, table, index)
        assert entries == expected_entries(table, index, items), index.name
        count, size = indexes.index_stats(h.db, table, index)
        assert count == len(entries), index.name
        expected_size = sum(
            item_size(e) + indexes.INDEX_ENTRY_OVERHEAD_BYTES for e in entries.values()
        )
        assert size == expected_size, index.name


# --- Maintenance --------------------------------------------------------------------------------


def test_a_put_writes_one_projected_entry_per_index(h: Harness) -> None:
    create_indexed(h)
    item = {
        "pk": s("a"),
        "sk": s("1"),
        "l": n("5"),
        "g": s("G"),
        "r": n("2"),
        "inc": s("i"),
        "x": s("x"),
    }
    h.put(item)
    table = h.table()
    by_l, by_g, by_gr = (table.index(name) for name in ("by_l", "by_g", "by_gr"))
    assert list(stored_entries(h, table, by_l).values()) == [
        {"pk": s("a"), "sk": s("1"), "l": n("5")}
    ]
    assert list(stored_entries(h, table, by_g).values()) == [
        {"pk": s("a"), "sk": s("1"), "g": s("G"), "inc": s("i")}
    ]
    assert list(stored_entries(h, table, by_gr).values()) == [item]
    check_indexes_match_items(h)


def test_an_item_without_an_index_key_is_absent_from_that_index(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("G")})  # no l, no r
    table = h.table()
    assert stored_entries(h, table, table.index("by_l")) == {}
    assert stored_entries(h, table, table.index("by_gr")) == {}
    assert len(stored_entries(h, table, table.index("by_g"))) == 1
    check_indexes_match_items(h)


def test_an_update_of_an_index_key_moves_the_entry(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("old"), "r": n("1")})
    h(
        "UpdateItem",
        {
            "TableName": "tbl",
            "Key": {"pk": s("a"), "sk": s("1")},
            "UpdateExpression": "SET g = :g",
            "ExpressionAttributeValues": {":g": s("new")},
        },
    )
    table = h.table()
    entries = list(stored_entries(h, table, table.index("by_gr")).values())
    assert entries == [{"pk": s("a"), "sk": s("1"), "g": s("new"), "r": n("1")}]
    check_indexes_match_items(h)


def test_removing_an_index_key_attribute_removes_the_entry(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("G"), "l": n("3")})
    h(
        "UpdateItem",
        {"TableName": "tbl", "Key": {"pk": s("a"), "sk": s("1")}, "UpdateExpression": "REMOVE g"},
    )
    table = h.table()
    assert stored_entries(h, table, table.index("by_g")) == {}
    assert len(stored_entries(h, table, table.index("by_l"))) == 1
    check_indexes_match_items(h)


def test_a_delete_removes_every_entry_and_zeroes_the_statistics(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("G"), "l": n("3"), "r": n("4")})
    h("DeleteItem", {"TableName": "tbl", "Key": {"pk": s("a"), "sk": s("1")}})
    table = h.table()
    for index in table.local_indexes + table.global_indexes:
        assert stored_entries(h, table, index) == {}
        assert indexes.index_stats(h.db, table, index) == (0, 0)
    check_indexes_match_items(h)


def test_a_replacing_put_keeps_one_entry_per_item(h: Harness) -> None:
    create_indexed(h)
    for g in ("A", "B", "B", "C"):
        h.put({"pk": s("a"), "sk": s("1"), "g": s(g), "inc": s(g * 3)})
    table = h.table()
    assert list(stored_entries(h, table, table.index("by_g")).values()) == [
        {"pk": s("a"), "sk": s("1"), "g": s("C"), "inc": s("CCC")}
    ]
    check_indexes_match_items(h)


def test_describe_table_reports_index_item_counts_and_sizes(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("G"), "l": n("1")})
    h.put({"pk": s("a"), "sk": s("2"), "g": s("G")})
    described = h.describe()
    local = {i["IndexName"]: i for i in described["LocalSecondaryIndexes"]}
    global_ = {i["IndexName"]: i for i in described["GlobalSecondaryIndexes"]}
    assert local["by_l"]["ItemCount"] == 1
    keys_only = {"pk": s("a"), "sk": s("1"), "l": n("1")}
    assert local["by_l"]["IndexSizeBytes"] == item_size(keys_only) + 100
    assert global_["by_g"]["ItemCount"] == 2
    assert global_["by_gr"]["ItemCount"] == 0
    assert global_["by_gr"]["IndexSizeBytes"] == 0


def test_a_wrongly_typed_index_key_is_refused_with_dynamodbs_message(h: Harness) -> None:
    create_indexed(h)
    error = h.error(
        "PutItem", {"TableName": "tbl", "Item": {"pk": s("a"), "sk": s("1"), "g": n("1")}}
    )
    assert isinstance(error, ValidationException)
    assert error.message == (
        "One or more parameter values were invalid: Type mismatch for Index Key g Expected: S "
        "Actual: N IndexName: by_g"
    )


# --- Capacity -----------------------------------------------------------------------------------


def consumed(h: Harness, operation: str, body: dict[str, Any], mode: str = "INDEXES") -> Any:
    return h(operation, {"TableName": "tbl", "ReturnConsumedCapacity": mode, **body})[
        "ConsumedCapacity"
    ]


def test_a_new_item_costs_one_put_in_each_index_it_enters(h: Harness) -> None:
    create_indexed(h)
    answer = consumed(
        h, "PutItem", {"Item": {"pk": s("a"), "sk": s("1"), "g": s("G"), "l": n("1")}}
    )
    assert answer == {
        "TableName": "tbl",
        "CapacityUnits": 3.0,
        "Table": {"CapacityUnits": 1.0},
        "LocalSecondaryIndexes": {"by_l": {"CapacityUnits": 1.0}},
        "GlobalSecondaryIndexes": {"by_g": {"CapacityUnits": 1.0}},
    }


def test_total_capacity_includes_the_index_writes(h: Harness) -> None:
    create_indexed(h)
    answer = consumed(h, "PutItem", {"Item": {"pk": s("a"), "sk": s("1"), "g": s("G")}}, "TOTAL")
    assert answer == {"TableName": "tbl", "CapacityUnits": 2.0}


def test_moving_an_index_entry_costs_a_delete_and_a_put(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("G")})
    answer = consumed(
        h,
        "UpdateItem",
        {
            "Key": {"pk": s("a"), "sk": s("1")},
            "UpdateExpression": "SET g = :g",
            "ExpressionAttributeValues": {":g": s("H")},
        },
    )
    assert answer["GlobalSecondaryIndexes"] == {"by_g": {"CapacityUnits": 2.0}}
    assert answer["CapacityUnits"] == 3.0


def test_a_change_outside_an_indexs_projection_costs_nothing_in_it(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("G"), "l": n("1")})
    answer = consumed(
        h,
        "UpdateItem",
        {
            "Key": {"pk": s("a"), "sk": s("1")},
            "UpdateExpression": "SET misc = :o",
            "ExpressionAttributeValues": {":o": s("o")},
        },
    )
    assert answer == {"TableName": "tbl", "CapacityUnits": 1.0, "Table": {"CapacityUnits": 1.0}}


def test_a_change_of_a_projected_attribute_costs_one_put(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("G")})
    answer = consumed(
        h,
        "UpdateItem",
        {
            "Key": {"pk": s("a"), "sk": s("1")},
            "UpdateExpression": "SET inc = :i",
            "ExpressionAttributeValues": {":i": s("i")},
        },
    )
    assert answer["GlobalSecondaryIndexes"] == {"by_g": {"CapacityUnits": 1.0}}


def test_deleting_an_indexed_item_costs_one_delete_per_index(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("G"), "r": n("1"), "l": n("1")})
    answer = consumed(h, "DeleteItem", {"Key": {"pk": s("a"), "sk": s("1")}})
    assert answer["CapacityUnits"] == 4.0
    assert answer["GlobalSecondaryIndexes"] == {
        "by_g": {"CapacityUnits": 1.0},
        "by_gr": {"CapacityUnits": 1.0},
    }


def test_an_index_write_is_charged_by_the_entry_size_in_kilobytes(h: Harness) -> None:
    create_indexed(h)
    big = "x" * 3000  # projected only into the ALL index
    answer = consumed(
        h,
        "PutItem",
        {"Item": {"pk": s("a"), "sk": s("1"), "g": s("G"), "r": n("1"), "big": s(big)}},
    )
    assert answer["Table"] == {"CapacityUnits": 3.0}
    assert answer["GlobalSecondaryIndexes"] == {
        "by_g": {"CapacityUnits": 1.0},
        "by_gr": {"CapacityUnits": 3.0},
    }


# --- Item collections ---------------------------------------------------------------------------


def test_item_collection_metrics_count_items_and_local_index_entries(h: Harness) -> None:
    create_indexed(h)
    item = {"pk": s("a"), "sk": s("1"), "l": n("1")}
    answer = h.put(item, ReturnItemCollectionMetrics="SIZE")
    assert answer["ItemCollectionMetrics"] == {
        "ItemCollectionKey": {"pk": s("a")},
        "SizeEstimateRangeGB": [0.0, 1.0],
    }
    table = h.table()
    expected = item_size(item) + item_size(item) + indexes.INDEX_ENTRY_OVERHEAD_BYTES
    assert indexes.collection_bytes(h.db, table, s("a")) == expected
    h("DeleteItem", {"TableName": "tbl", "Key": {"pk": s("a"), "sk": s("1")}})
    assert indexes.collection_bytes(h.db, table, s("a")) == 0


def test_a_write_past_ten_gigabytes_of_item_collection_is_refused(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1")})
    table = h.table()
    # A collection 1 byte short of the limit (a fake of 10 GB of items).
    key = indexes.collection_key(table.table_id, s("a"))
    lsn = h.store.applied_lsn()
    h.store.write([(key, msgpack.packb(indexes.ITEM_COLLECTION_BYTES_MAX - 1))], [], lsn)
    error = h.error("PutItem", {"TableName": "tbl", "Item": {"pk": s("a"), "sk": s("2")}})
    assert isinstance(error, ItemCollectionSizeLimitExceededException)
    assert error.message == "Collection size exceeded"
    # Another partition key is another collection; and shrinking the full one is allowed.
    h.put({"pk": s("b"), "sk": s("2")})
    h("DeleteItem", {"TableName": "tbl", "Key": {"pk": s("a"), "sk": s("1")}})


# --- Global indexes added and deleted by UpdateTable ------------------------------------------


def add_gsi(
    h: Harness, name: str = "new", attribute: str = "x", type_: str = "S", **extra: Any
) -> Any:
    return h(
        "UpdateTable",
        {
            "TableName": "tbl",
            "AttributeDefinitions": [{"AttributeName": attribute, "AttributeType": type_}],
            "GlobalSecondaryIndexUpdates": [
                {
                    "Create": {
                        "IndexName": name,
                        "KeySchema": [{"AttributeName": attribute, "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "ALL"},
                        **extra,
                    }
                }
            ],
        },
    )


def gsi_description(h: Harness, name: str) -> dict[str, Any] | None:
    for index in h.describe().get("GlobalSecondaryIndexes", []):
        if index["IndexName"] == name:
            return index
    return None


def test_a_new_global_index_is_created_backfilling_then_becomes_active(h: Harness) -> None:
    create_plain(h)
    for i in range(5):
        h.put({"pk": s(f"p{i}"), "x": s(f"x{i % 2}")})
    h.put({"pk": s("nox")})
    h.put({"pk": s("wrong"), "x": n("1")})  # written before the index: left out of it
    answer = add_gsi(h)
    created = answer["TableDescription"]["GlobalSecondaryIndexes"][0]
    assert created["IndexStatus"] == "CREATING"
    # The answer shows the index before its backfill starts; DescribeTable shows it backfilling.
    assert created["Backfilling"] is False
    assert gsi_description(h, "new")["IndexStatus"] == "CREATING"
    assert gsi_description(h, "new")["Backfilling"] is True
    assert h.backfill() == 1
    described = gsi_description(h, "new")
    assert described["IndexStatus"] == "ACTIVE"
    assert "Backfilling" not in described
    assert described["ItemCount"] == 5
    check_indexes_match_items(h)
    assert {"AttributeName": "x", "AttributeType": "S"} in h.describe()["AttributeDefinitions"]


def test_a_backfill_runs_in_bounded_batches_each_one_log_record(h: Harness) -> None:
    create_plain(h)
    count = 2 * indexes.BACKFILL_ITEMS_MAX + 5
    for i in range(count):
        h.put({"pk": s(f"p{i:04}"), "x": s("v")})
    add_gsi(h)
    before = h.log.committed_lsn()
    assert h.backfill() == 3
    assert h.log.committed_lsn() - before == 3
    assert gsi_description(h, "new")["ItemCount"] == count
    check_indexes_match_items(h)


def test_writes_during_a_backfill_maintain_the_new_index(h: Harness) -> None:
    create_plain(h)
    for i in range(2 * indexes.BACKFILL_ITEMS_MAX):
        h.put({"pk": s(f"p{i:04}"), "x": s("old")})
    add_gsi(h)
    assert h.step()  # one batch
    assert gsi_description(h, "new")["IndexStatus"] == "CREATING"
    # Writes on both sides of the cursor: updates, deletes, new items, removed keys.
    for i in range(0, 2 * indexes.BACKFILL_ITEMS_MAX, 7):
        h.put({"pk": s(f"p{i:04}"), "x": s(f"new{i}")})
    for i in range(3, 2 * indexes.BACKFILL_ITEMS_MAX, 11):
        h("DeleteItem", {"TableName": "tbl", "Key": {"pk": s(f"p{i:04}")}})
    for i in range(5, 2 * indexes.BACKFILL_ITEMS_MAX, 13):
        h(
            "UpdateItem",
            {"TableName": "tbl", "Key": {"pk": s(f"p{i:04}")}, "UpdateExpression": "REMOVE x"},
        )
    h.put({"pk": s("zzz"), "x": s("late")})
    check_indexes_stay_subset(h)
    h.backfill()
    assert gsi_description(h, "new")["IndexStatus"] == "ACTIVE"
    check_indexes_match_items(h)


def check_indexes_stay_subset(h: Harness) -> None:
    """While backfilling, an index holds no entry the reference lacks, and every entry it
    holds is the reference's."""
    table = h.table()
    items = base_items(h)
    for index in table.global_indexes:
        expected = expected_entries(table, index, items)
        for key, entry in stored_entries(h, table, index).items():
            assert expected.get(key) == entry


def test_a_deleted_global_index_goes_deleting_then_disappears_with_its_entries(h: Harness) -> None:
    create_indexed(h)
    h.put({"pk": s("a"), "sk": s("1"), "g": s("G"), "r": n("1")})
    table = h.table()
    gone = table.index("by_g")
    gone_id = indexes.index_id(table, gone)
    kept_id = indexes.index_id(table, table.index("by_gr"))
    answer = h(
        "UpdateTable",
        {"TableName": "tbl", "GlobalSecondaryIndexUpdates": [{"Delete": {"IndexName": "by_g"}}]},
    )
    statuses = {
        i["IndexName"]: i["IndexStatus"]
        for i in answer["TableDescription"]["GlobalSecondaryIndexes"]
    }
    assert statuses == {"by_g": "DELETING", "by_gr": "ACTIVE"}
    assert h.backfill() == 1
    assert gsi_description(h, "by_g") is None
    start, end = index_bounds(table.table_id, gone_id)
    assert list(h.store.scan(start, end)) == []
    assert h.store.get(indexes.index_stats_key(table.table_id, gone_id)) is None
    # The remaining index keeps its id, and Query and Scan find its entries where they were.
    table = h.table()
    assert indexes.index_id(table, table.index("by_gr")) == kept_id
    assert paging.index_id(table, table.index("by_gr")) == kept_id
    check_indexes_match_items(h)
    answer = h(
        "Query",
        {
            "TableName": "tbl",
            "IndexName": "by_gr",
            "KeyConditionExpression": "g = :g",
            "ExpressionAttributeValues": {":g": s("G")},
        },
    )
    assert answer["Items"] == [{"pk": s("a"), "sk": s("1"), "g": s("G"), "r": n("1")}]
    # "g" still keys by_gr: its definition stays; none was used only by the deleted index.
    names = [d["AttributeName"] for d in h.describe()["AttributeDefinitions"]]
    assert "g" in names


def test_deleting_the_only_index_on_an_attribute_drops_its_definition(h: Harness) -> None:
    create_plain(h)
    add_gsi(h)
    h.backfill()
    h(
        "UpdateTable",
        {"TableName": "tbl", "GlobalSecondaryIndexUpdates": [{"Delete": {"IndexName": "new"}}]},
    )
    h.backfill()
    assert h.describe()["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert "GlobalSecondaryIndexes" not in h.describe()
    # The attribute may now hold any type.
    h.put({"pk": s("a"), "x": n("1")})


def test_a_recreated_index_gets_a_fresh_backfill(h: Harness) -> None:
    create_plain(h)
    h.put({"pk": s("a"), "x": s("1")})
    add_gsi(h)
    h.backfill()
    h(
        "UpdateTable",
        {"TableName": "tbl", "GlobalSecondaryIndexUpdates": [{"Delete": {"IndexName": "new"}}]},
    )
    h.backfill()
    h.put({"pk": s("b"), "x": s("2")})
    add_gsi(h)
    h.backfill()
    assert gsi_description(h, "new")["ItemCount"] == 2
    check_indexes_match_items(h)


def test_an_index_being_created_may_be_deleted(h: Harness) -> None:
    create_plain(h)
    for i in range(2 * indexes.BACKFILL_ITEMS_MAX):
        h.put({"pk": s(f"p{i}"), "x": s("v")})
    add_gsi(h)
    assert h.step()
    h(
        "UpdateTable",
        {"TableName": "tbl", "GlobalSecondaryIndexUpdates": [{"Delete": {"IndexName": "new"}}]},
    )
    h.backfill()
    assert "GlobalSecondaryIndexes" not in h.describe()
    table = h.table()
    start, end = table_bounds(table.table_id)
    base_start, base_end = index_bounds(table.table_id, 0)
    # Nothing remains but the items and the table's own statistics.
    leftovers = [k for k, _ in h.store.scan(start, end) if not base_start <= k < base_end]
    assert len(leftovers) == 1


def update_error(h: Harness, updates: list[dict[str, Any]], **extra: Any) -> ClientError:
    return h.error(
        "UpdateTable", {"TableName": "tbl", "GlobalSecondaryIndexUpdates": updates, **extra}
    )


CREATE_X = {
    "Create": {
        "IndexName": "idx_x",
        "KeySchema": [{"AttributeName": "x", "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "ALL"},
    }
}
X_DEFINED = [{"AttributeName": "x", "AttributeType": "S"}]
ONLINE_LIMIT = (
    "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously "
    "per table"
)


def test_two_index_creations_in_one_request_exceed_the_online_index_limit(h: Harness) -> None:
    create_indexed(h)
    second = {"Create": dict(CREATE_X["Create"], IndexName="idx_y")}
    error = update_error(h, [CREATE_X, second], AttributeDefinitions=X_DEFINED)
    assert isinstance(error, LimitExceededException)
    assert error.message == ONLINE_LIMIT
    error = update_error(
        h, [CREATE_X, {"Delete": {"IndexName": "by_g"}}], AttributeDefinitions=X_DEFINED
    )
    assert isinstance(error, LimitExceededException)


def test_an_index_cannot_be_added_while_another_is_being_created(h: Harness) -> None:
    create_plain(h)
    add_gsi(h)
    error = h.error(
        "UpdateTable",
        {
            "TableName": "tbl",
            "AttributeDefinitions": [{"AttributeName": "y", "AttributeType": "S"}],
            "GlobalSecondaryIndexUpdates": [
                {
                    "Create": {
                        "IndexName": "other",
                        "KeySchema": [{"AttributeName": "y", "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                }
            ],
        },
    )
    assert isinstance(error, LimitExceededException)
    assert error.message == ONLINE_LIMIT


def test_creating_an_existing_index_name_is_refused(h: Harness) -> None:
    create_indexed(h)
    for name in ("by_g", "by_l"):
        create = {"Create": dict(CREATE_X["Create"], IndexName=name)}
        error = update_error(h, [create], AttributeDefinitions=X_DEFINED)
        assert isinstance(error, ValidationException)
        assert error.message == "Attempting to create an index which already exists"


def test_creating_an_index_needs_its_attribute_definitions(h: Harness) -> None:
    create_indexed(h)
    error = update_error(h, [CREATE_X])
    assert error.message == (
        "One or more parameter values were invalid: AttributeDefinitions is not specified for "
        "index: idx_x"
    )
    error = update_error(
        h, [CREATE_X], AttributeDefinitions=[{"AttributeName": "y", "AttributeType": "S"}]
    )
    assert error.message == (
        "One or more parameter values were invalid: Some index key attributes are not defined in "
        "AttributeDefinitions. Keys: [x], AttributeDefinitions: [y]"
    )


def test_an_attribute_cannot_be_redefined_with_another_type(h: Harness) -> None:
    create_indexed(h)
    create = {
        "Create": dict(CREATE_X["Create"], KeySchema=[{"AttributeName": "g", "KeyType": "HASH"}])
    }
    error = update_error(
        h, [create], AttributeDefinitions=[{"AttributeName": "g", "AttributeType": "N"}]
    )
    assert isinstance(error, ValidationException)
    assert error.message == (
        "One or more parameter values were invalid: Attributes cannot be redefined. Please check "
        "that your attribute has the same type as previously defined. Existing schema: "
        "Schema:[SchemaElement: key{g:S:HASH}] New schema: Schema:[SchemaElement: key{g:N:HASH}]"
    )


def test_deleting_or_updating_a_local_index_is_refused(h: Harness) -> None:
    create_indexed(h)
    error = update_error(h, [{"Delete": {"IndexName": "by_l"}}])
    assert error.message == "Cannot delete an index that is not a GlobalSecondaryIndex: by_l"
    throughput = {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}
    error = update_error(
        h, [{"Update": {"IndexName": "by_l", "ProvisionedThroughput": throughput}}]
    )
    assert error.message == "Cannot update an index that is not a GlobalSecondaryIndex: by_l"


def test_deleting_a_missing_index_is_resource_not_found(h: Harness) -> None:
    create_indexed(h)
    error = update_error(h, [{"Delete": {"IndexName": "nope"}}])
    assert isinstance(error, ResourceNotFoundException)
    assert error.message == "Requested resource not found: Index nope for table tbl"


def test_a_provisioned_tables_index_throughput_is_updated(h: Harness) -> None:
    throughput = {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}
    h(
        "CreateTable",
        {
            "TableName": "tbl",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "g", "AttributeType": "S"},
            ],
            "ProvisionedThroughput": throughput,
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": "by_g",
                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                    "ProvisionedThroughput": throughput,
                }
            ],
        },
    )
    answer = h(
        "UpdateTable",
        {
            "TableName": "tbl",
            "GlobalSecondaryIndexUpdates": [
                {
                    "Update": {
                        "IndexName": "by_g",
                        "ProvisionedThroughput": {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3},
                    }
                }
            ],
        },
    )
    # The answer shows the index UPDATING with the throughput it had; DescribeTable the new.
    (shown,) = answer["TableDescription"]["GlobalSecondaryIndexes"]
    assert shown["IndexStatus"] == "UPDATING"
    assert shown["ProvisionedThroughput"]["ReadCapacityUnits"] == 1
    described = gsi_description(h, "by_g")
    assert described["IndexStatus"] == "ACTIVE"
    assert described["ProvisionedThroughput"]["ReadCapacityUnits"] == 7
    assert described["ProvisionedThroughput"]["WriteCapacityUnits"] == 3
    # A new index of a provisioned table needs throughput of its own.
    error = update_error(h, [CREATE_X], AttributeDefinitions=X_DEFINED)
    assert error.message == (
        "One or more parameter values were invalid: Both ReadCapacityUnits and "
        "WriteCapacityUnits must be specified for index: idx_x"
    )
    same = {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3}
    error = update_error(h, [{"Update": {"IndexName": "by_g", "ProvisionedThroughput": same}}])
    assert error.message == (
        "The provisioned throughput for the index by_g will not change. The requested value "
        "equals the current value. Current ReadCapacityUnits provisioned for index by_g: 7. "
        "Requested ReadCapacityUnits: 7. Current WriteCapacityUnits provisioned for index by_g: "
        "3. Requested WriteCapacityUnits: 3. Refer to the Amazon DynamoDB Developer Guide for "
        "current limits and how to request higher limits."
    )


# --- Crash and replay -----------------------------------------------------------------------


def replay(entries: list[tuple[int, bytes]], store: MemoryStore | None = None) -> MemoryStore:
    """Apply log entries to a store (a new one unless given), as recovery does."""
    store = MemoryStore() if store is None else store
    db = Database(store)
    db.apply(entries)
    return store


def workload(h: Harness) -> None:
    create_indexed(h)
    for i in range(40):
        item = {"pk": s(f"p{i % 5}"), "sk": s(f"s{i}"), "g": s(f"g{i % 3}")}
        if i % 2:
            item["l"] = n(str(i))
        if i % 3:
            item["r"] = n(str(i % 4))
        h.put(item)
    for i in range(0, 40, 4):
        h("DeleteItem", {"TableName": "tbl", "Key": {"pk": s(f"p{i % 5}"), "sk": s(f"s{i}")}})
    h(
        "UpdateTable",
        {
            "TableName": "tbl",
            "AttributeDefinitions": [{"AttributeName": "inc", "AttributeType": "S"}],
            "GlobalSecondaryIndexUpdates": [
                {
                    "Create": {
                        "IndexName": "by_inc",
                        "KeySchema": [{"AttributeName": "inc", "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "KEYS_ONLY"},
                    }
                }
            ],
        },
    )
    for i in range(1, 40, 3):
        h(
            "UpdateItem",
            {
                "TableName": "tbl",
                "Key": {"pk": s(f"p{i % 5}"), "sk": s(f"s{i}")},
                "UpdateExpression": "SET inc = :v, g = :g",
                "ExpressionAttributeValues": {":v": s(f"v{i}"), ":g": s("moved")},
            },
        )
    h.backfill()
    h(
        "UpdateTable",
        {"TableName": "tbl", "GlobalSecondaryIndexUpdates": [{"Delete": {"IndexName": "by_g"}}]},
    )
    h.backfill()


def test_replaying_the_log_into_a_new_store_rebuilds_base_and_indexes_exactly(h: Harness) -> None:
    workload(h)
    check_indexes_match_items(h)
    rebuilt = replay(h.log.entries)
    assert list(rebuilt.scan(b"", None)) == list(h.store.scan(b"", None))


def test_a_crash_at_any_point_of_the_log_recovers_to_the_same_state(h: Harness) -> None:
    workload(h)
    final = list(h.store.scan(b"", None))
    entries = h.log.entries
    for cut in range(1, len(entries), 7):
        # The store holds a prefix of the log when the node stops; recovery replays the whole
        # log over it (entries already applied are skipped).
        store = replay(entries[:cut])
        replay(entries, store)
        assert list(store.scan(b"", None)) == final, cut


def test_a_crash_inside_an_index_drop_replays_it(h: Harness) -> None:
    workload(h)
    entries = h.log.entries
    drop_at = max(i for i, (_, data) in enumerate(entries) if b"index_drop" in data)
    store = replay(entries[:drop_at])
    # The drop's range delete ran (recorded at lsn - 1), then the node stopped before its
    # catalog write: the record is applied again at recovery.
    lsn, data = entries[drop_at]
    record = decode_record(data)
    db = Database(store)
    (table,) = catalog.list_tables(db)
    index = table.index(record["index"])
    start, end = index_bounds(table.table_id, indexes.index_id(table, index))
    store.delete_range(start, end, lsn - 1)
    replay(entries, store)
    assert list(store.scan(b"", None)) == list(h.store.scan(b"", None))


def test_the_background_task_runs_every_pending_backfill() -> None:
    store = MemoryStore()
    db = Database(store)
    db.attach_log(MemoryLog(db.apply))

    async def scenario() -> list[str]:
        await db.dispatch(
            "CreateTable",
            {
                "TableName": "tbl",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        for i in range(250):
            await db.dispatch(
                "PutItem", {"TableName": "tbl", "Item": {"pk": s(f"{i}"), "x": s("v")}}
            )
        await db.dispatch(
            "UpdateTable",
            {
                "TableName": "tbl",
                "AttributeDefinitions": X_DEFINED,
                "GlobalSecondaryIndexUpdates": [CREATE_X],
            },
        )
        task = db.state[indexes.STATE_KEY]
        await asyncio.wait_for(task, timeout=10)
        described = await db.dispatch("DescribeTable", {"TableName": "tbl"})
        return [i["IndexStatus"] for i in described["Table"]["GlobalSecondaryIndexes"]] + [
            str(described["Table"]["GlobalSecondaryIndexes"][0]["ItemCount"])
        ]

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == ["ACTIVE", "250"]
    finally:
        loop.close()


def test_index_key_values_have_the_tables_key_size_limits(h: Harness) -> None:
    create_indexed(h)
    error = h.error(
        "PutItem", {"TableName": "tbl", "Item": {"pk": s("a"), "sk": s("1"), "g": s("x" * 2049)}}
    )
    assert error.message == (
        "One or more parameter values were invalid: Size of hashkey has exceeded the maximum "
        "size limit of2048 bytes"
    )
    h.put({"pk": s("a"), "sk": s("1"), "g": s("x" * 2048)})
    table = h.table()
    assert len(stored_entries(h, table, table.index("by_g"))) == 1


def test_a_table_cannot_be_deleted_while_an_index_is_being_built(h: Harness) -> None:
    create_plain(h)
    for i in range(2 * indexes.BACKFILL_ITEMS_MAX):
        h.put({"pk": s(f"p{i}"), "x": s("v")})
    add_gsi(h)
    assert h.step()
    error = h.error("DeleteTable", {"TableName": "tbl"})
    assert isinstance(error, ResourceInUseException)
    assert error.message == (
        "Attempt to change a resource which is still in use: Cannot delete table while indexes "
        "are being created, updated, or deleted."
    )
    h.backfill()
    table = h.table()
    h("DeleteTable", {"TableName": "tbl"})
    start, end = table_bounds(table.table_id)
    assert list(h.store.scan(start, end)) == []
    # A batch proposed for the table before it was deleted changes nothing.
    record = {"kind": "index_backfill", "table_id": table.table_id, "index": "new"}
    record.update(index_id=indexes.index_id(table, table.index("new")), items_max=10)
    h.loop.run_until_complete(h.db.propose(record))
    assert list(h.store.scan(start, end)) == []


def test_an_on_demand_tables_index_takes_no_provisioned_throughput(h: Harness) -> None:
    create_indexed(h)
    throughput = {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}
    error = update_error(
        h, [{"Update": {"IndexName": "by_g", "ProvisionedThroughput": throughput}}]
    )
    assert error.message == (
        "One or more parameter values were invalid: The only Updates for index: by_g when "
        "TableThroughputMode is PAY_PER_REQUEST can be to OnDemandThroughput, WarmThroughput"
    )


def test_an_index_being_deleted_blocks_capacity_changes(h: Harness) -> None:
    create_indexed(h)
    delete = [{"Delete": {"IndexName": "by_g"}}]
    h("UpdateTable", {"TableName": "tbl", "GlobalSecondaryIndexUpdates": delete})
    throughput = {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}
    error = h.error(
        "UpdateTable",
        {"TableName": "tbl", "BillingMode": "PROVISIONED", "ProvisionedThroughput": throughput},
    )
    assert isinstance(error, ResourceInUseException)
    assert error.message == (
        "Attempt to change a resource which is still in use: Can't change table IOPS when an "
        "index is being deleted. Table: tbl Indexes: [by_g]"
    )
    error = update_error(
        h,
        [{"Update": {"IndexName": "by_g", "ProvisionedThroughput": throughput}}],
        BillingMode="PROVISIONED",
        ProvisionedThroughput=throughput,
    )
    assert error.message == (
        "Attempt to change a resource which is still in use: Index is being deleted. Table: tbl "
        "Index: by_g"
    )
    h.backfill()
    assert gsi_description(h, "by_g") is None


def test_creating_an_index_shares_a_request_only_with_billing_and_updates(h: Harness) -> None:
    create_indexed(h)
    error = update_error(
        h, [CREATE_X], AttributeDefinitions=X_DEFINED, StreamSpecification={"StreamEnabled": False}
    )
    assert error.message == (
        "One or more parameter values were invalid: You cannot create or delete index while "
        "changing stream status"
    )
    error = update_error(h, [], DeletionProtectionEnabled=True)
    assert error.message == (
        "One or more parameter values were invalid: List of GlobalSecondaryIndexUpdates is empty"
    )


def test_a_twenty_first_global_index_exceeds_the_limit(h: Harness) -> None:
    create_plain(h)
    for i in range(20):
        add_gsi(h, name=f"gsi{i:02}", attribute=f"a{i}")
        h.backfill()
    key = [{"AttributeName": "a20", "KeyType": "HASH"}]
    error = h.error(
        "UpdateTable",
        {
            "TableName": "tbl",
            "AttributeDefinitions": [{"AttributeName": "a20", "AttributeType": "S"}],
            "GlobalSecondaryIndexUpdates": [{"Create": dict(CREATE_X["Create"], KeySchema=key)}],
        },
    )
    assert isinstance(error, LimitExceededException)
    assert error.message == (
        "Subscriber limit exceeded: Number of global secondary indexes exceeds per-table limit "
        "of 20"
    )


def test_an_index_being_backfilled_cannot_be_read_yet(h: Harness) -> None:
    create_plain(h)
    h.put({"pk": s("a"), "x": s("1")})
    add_gsi(h)
    query = {
        "TableName": "tbl",
        "IndexName": "new",
        "KeyConditionExpression": "x = :x",
        "ExpressionAttributeValues": {":x": s("1")},
    }
    error = h.error("Query", query)
    assert error.message == "Cannot read from backfilling global secondary index: new"
    h.backfill()
    assert h("Query", query)["Items"] == [{"pk": s("a"), "x": s("1")}]


def test_an_on_demand_index_accepts_on_demand_and_warm_throughput_updates(h: Harness) -> None:
    create_indexed(h)
    on_demand = {"MaxReadRequestUnits": 100, "MaxWriteRequestUnits": 100}
    answer = h(
        "UpdateTable",
        {
            "TableName": "tbl",
            "GlobalSecondaryIndexUpdates": [
                {"Update": {"IndexName": "by_g", "OnDemandThroughput": on_demand}}
            ],
        },
    )
    assert answer["TableDescription"]["TableName"] == "tbl"
    error = update_error(h, [{"Update": {"IndexName": "by_g"}}])
    assert error.message == (
        "One or more parameter values were invalid: The only Updates for index: by_g when "
        "TableThroughputMode is PAY_PER_REQUEST can be to OnDemandThroughput, WarmThroughput"
    )


def test_a_backfill_batch_of_large_items_is_bounded_by_bytes(h: Harness) -> None:
    create_plain(h)
    big = "x" * 300_000
    for i in range(8):
        h.put({"pk": s(f"p{i}"), "x": s("v"), "big": s(big)})
    add_gsi(h)
    # About 1 MB per batch: four items of 300 KB reach it, so 8 items take 2 full batches
    # and a last, empty one that ends the backfill.
    assert h.backfill() == 3
    assert gsi_description(h, "new")["ItemCount"] == 8
    check_indexes_match_items(h)
