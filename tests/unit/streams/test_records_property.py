"""Random writes produce exactly the model's per-item change sequence: every write that
changes an item makes one record with the right event, keys and images, in order, and a
write that changes nothing makes none. The model is a plain dict of items."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

KEYS = ("a", "b", "c")
VALUES = ("1", "2", "2.0", "3")

Item = dict[str, Any]

write = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.tuples(st.just("set"), st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.tuples(st.just("remove_v"), st.sampled_from(KEYS), st.just("")),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just("")),
    st.tuples(st.just("batch_put"), st.sampled_from(KEYS), st.sampled_from(VALUES)),
)


def canonical(value: str) -> str:
    # DynamoDB stores numbers normalised: "2.0" is "2".
    return str(int(float(value))) if float(value).is_integer() else value


def apply_model(model: dict[str, Item], op: str, key: str, value: str) -> Item | None:
    """Change the model; return the new image (None: deleted)."""
    if op in ("put", "batch_put"):
        model[key] = {"pk": {"S": key}, "v": {"N": canonical(value)}}
    elif op == "set":
        model[key] = {**model.get(key, {"pk": {"S": key}}), "v": {"N": canonical(value)}}
    elif op == "remove_v":
        model[key] = {k: v for k, v in model.get(key, {"pk": {"S": key}}).items() if k != "v"}
    else:
        model.pop(key, None)
    return model.get(key)


def send(h: Any, op: str, key: str, value: str) -> None:
    if op == "put":
        h.put({"pk": {"S": key}, "v": {"N": value}})
    elif op == "batch_put":
        h(
            "BatchWriteItem",
            {
                "RequestItems": {
                    "tbl": [{"PutRequest": {"Item": {"pk": {"S": key}, "v": {"N": value}}}}]
                }
            },
        )
    elif op == "set":
        h(
            "UpdateItem",
            {
                "TableName": "tbl",
                "Key": {"pk": {"S": key}},
                "UpdateExpression": "SET v = :v",
                "ExpressionAttributeValues": {":v": {"N": value}},
            },
        )
    elif op == "remove_v":
        h(
            "UpdateItem",
            {"TableName": "tbl", "Key": {"pk": {"S": key}}, "UpdateExpression": "REMOVE v"},
        )
    else:
        h("DeleteItem", {"TableName": "tbl", "Key": {"pk": {"S": key}}})


@settings(max_examples=60, deadline=None)
@given(st.lists(write, max_size=25))
def test_random_writes_make_exactly_the_models_change_sequence(
    new_harness: Any, writes: list[tuple[str, str, str]]
) -> None:
    h = new_harness()
    try:
        arn = h.create(view="NEW_AND_OLD_IMAGES")
        model: dict[str, Item] = {}
        expected: list[tuple[str, str, Item | None, Item | None]] = []
        for op, key, value in writes:
            old = model.get(key)
            old = None if old is None else dict(old)
            new = apply_model(model, op, key, value)
            send(h, op, key, value)
            if old == new:
                continue
            event = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
            expected.append((event, key, old, None if new is None else dict(new)))
        got = [
            (
                r["eventName"],
                r["dynamodb"]["Keys"]["pk"]["S"],
                r["dynamodb"].get("OldImage"),
                r["dynamodb"].get("NewImage"),
            )
            for r in h.records(arn)
        ]
        assert got == expected
    finally:
        h.close()
