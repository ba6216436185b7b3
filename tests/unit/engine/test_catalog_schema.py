"""The catalog's record form of a table: `Table.to_record` and `Table.from_record` are exact
inverses, also through msgpack (what the store and the log hold), and older records that lack
newer fields still load."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.engine.schema import KeyAttribute, SecondaryIndex, Table

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=3, max_size=20)
KEYS = st.builds(KeyAttribute, NAMES, st.sampled_from(["S", "N", "B"]))
TIMES = st.floats(min_value=0, max_value=4e9, allow_nan=False)
UNITS = st.integers(0, 40000)

INDEXES = st.builds(
    SecondaryIndex,
    name=NAMES,
    hash_key=KEYS,
    range_key=st.none() | KEYS,
    projection_type=st.sampled_from(["ALL", "KEYS_ONLY", "INCLUDE"]),
    non_key_attributes=st.lists(NAMES, max_size=3).map(tuple),
    arn=NAMES,
    is_global=st.booleans(),
    status=st.sampled_from(["ACTIVE", "CREATING"]),
    read_capacity_units=UNITS,
    write_capacity_units=UNITS,
)

TABLES = st.builds(
    Table,
    name=NAMES,
    table_id=st.uuids().map(str),
    hash_key=KEYS,
    range_key=st.none() | KEYS,
    status=st.sampled_from(["ACTIVE", "CREATING", "UPDATING", "DELETING"]),
    created_at=TIMES,
    arn=NAMES,
    attribute_definitions=st.lists(KEYS, max_size=4).map(tuple),
    billing_mode=st.sampled_from(["PROVISIONED", "PAY_PER_REQUEST"]),
    read_capacity_units=UNITS,
    write_capacity_units=UNITS,
    last_increase_at=st.none() | TIMES,
    last_decrease_at=st.none() | TIMES,
    decreases_day=st.integers(0, 50000),
    decreases_count=st.integers(0, 20),
    pay_per_request_since=st.none() | TIMES,
    stream_enabled=st.booleans(),
    stream_view_type=st.none() | st.sampled_from(["KEYS_ONLY", "NEW_IMAGE"]),
    stream_label=st.none() | st.just("2027-01-15T08:00:00.000"),
    deletion_protection=st.booleans(),
    table_class=st.none() | st.sampled_from(["STANDARD", "STANDARD_INFREQUENT_ACCESS"]),
    sse_enabled=st.booleans(),
    sse_type=st.none() | st.just("KMS"),
    kms_master_key_id=st.none() | NAMES,
    tags=st.dictionaries(NAMES, st.text(max_size=5), max_size=4).map(lambda d: tuple(d.items())),
    warm_read_units=UNITS,
    warm_write_units=UNITS,
    table_class_updates=st.lists(TIMES, max_size=2).map(tuple),
    on_demand_read_units=st.none() | UNITS,
    on_demand_write_units=st.none() | UNITS,
    local_indexes=st.lists(INDEXES, max_size=2).map(tuple),
    global_indexes=st.lists(INDEXES, max_size=2).map(tuple),
    extra=st.dictionaries(
        NAMES, st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=2
    ),
)


@settings(max_examples=100, deadline=None)
@given(TABLES)
def test_a_table_survives_its_record_form_through_msgpack(table: Table) -> None:
    record = table.to_record()
    assert Table.from_record(record) == table
    packed = msgpack.packb(record, use_bin_type=True)
    assert Table.from_record(msgpack.unpackb(packed, raw=False)) == table


def test_records_without_the_newer_fields_still_load() -> None:
    table = Table(
        name="old",
        table_id="00000000-0000-4000-8000-000000000000",
        hash_key=KeyAttribute("pk", "S"),
        range_key=None,
        status="ACTIVE",
        created_at=1.0,
        arn="arn:aws:dynamodb:us-east-1:000000000000:table/old",
    )
    record = table.to_record()
    for newer in [
        "warm_read_units",
        "warm_write_units",
        "table_class_updates",
        "on_demand_read_units",
        "on_demand_write_units",
    ]:
        del record[newer]
    loaded = Table.from_record(record)
    assert loaded.name == "old"
    assert loaded.on_demand_read_units is None
    assert loaded.table_class_updates == ()


def test_key_names_list_the_hash_key_first() -> None:
    table = Table(
        name="t",
        table_id="x",
        hash_key=KeyAttribute("h", "S"),
        range_key=KeyAttribute("r", "N"),
        status="ACTIVE",
        created_at=0.0,
        arn="a",
    )
    assert table.key_names == ("h", "r")
    assert table.evolve(range_key=None).key_names == ("h",)
    assert table.stream_arn is None
    assert table.evolve(stream_label="L").stream_arn == "a/stream/L"
