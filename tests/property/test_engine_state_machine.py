"""A rule-based state machine drives PutItem, UpdateItem, DeleteItem and GetItem (with
conditions and return values) against a plain dict model of the table, and checks after every
step that the engine answers, stores and counts exactly as the model says."""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from keeldb.engine.database import Database
from keeldb.engine.item_store import items_state, table_stats
from keeldb.engine.items import find_table
from keeldb.model.errors import ConditionalCheckFailedException, ValidationException
from keeldb.model.values import item_size
from keeldb.storage.memory import MemoryLog, MemoryStore

TABLE = "things"
Item = dict[str, dict[str, Any]]

keys = st.sampled_from(["a", "b", "c", "é", "a\x00b"])
sort_keys = st.sampled_from(["1", "2"])
numbers = st.integers(min_value=-1000, max_value=1000)
words = st.text(alphabet="xyz", max_size=4)
# (ConditionExpression, its values, its meaning on the model's item or None)
conditions = st.sampled_from(["none", "exists", "not_exists", "v_is", "v_below"])


def _condition(kind: str, value: int) -> tuple[dict[str, Any], Any]:
    if kind == "none":
        return {}, lambda item: True
    if kind == "exists":
        return {"ConditionExpression": "attribute_exists(pk)"}, lambda item: item is not None
    if kind == "not_exists":
        return (
            {
                "ConditionExpression": "attribute_not_exists(#p)",
                "ExpressionAttributeNames": {"#p": "pk"},
            },
            lambda item: item is None,
        )
    if kind == "v_is":
        return (
            {
                "ConditionExpression": "v = :c",
                "ExpressionAttributeValues": {":c": {"N": str(value)}},
            },
            lambda item: item is not None and "v" in item and int(item["v"]["N"]) == value,
        )
    assert kind == "v_below"
    return (
        {"ConditionExpression": "v < :c", "ExpressionAttributeValues": {":c": {"N": str(value)}}},
        lambda item: item is not None and "v" in item and int(item["v"]["N"]) < value,
    )


def _merge(request: dict[str, Any], condition: dict[str, Any]) -> dict[str, Any]:
    out = dict(request)
    for name, value in condition.items():
        if name in ("ExpressionAttributeNames", "ExpressionAttributeValues") and name in out:
            out[name] = {**out[name], **value}
        else:
            out[name] = value
    return out


class ItemOperations(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = MemoryStore()
        self.db = Database(self.store)
        self.db.attach_log(MemoryLog(self.db.apply))
        self.call(
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "N"},
                ],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
        self.model: dict[tuple[str, str], Item] = {}

    def teardown(self) -> None:
        self.loop.close()

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.loop.run_until_complete(self.db.dispatch(operation, body))

    @staticmethod
    def key(pk: str, sk: str) -> Item:
        return {"pk": {"S": pk}, "sk": {"N": sk}}

    @rule(
        pk=keys,
        sk=sort_keys,
        v=st.none() | numbers,
        w=st.none() | words,
        cond=conditions,
        c=numbers,
    )
    def put(self, pk: str, sk: str, v: int | None, w: str | None, cond: str, c: int) -> None:
        item = self.key(pk, sk)
        if v is not None:
            item["v"] = {"N": str(v)}
        if w is not None:
            item["w"] = {"S": w}
        condition, holds = _condition(cond, c)
        old = self.model.get((pk, sk))
        request = _merge({"TableName": TABLE, "Item": item, "ReturnValues": "ALL_OLD"}, condition)
        if not holds(old):
            try:
                self.call("PutItem", request)
            except ConditionalCheckFailedException:
                return
            raise AssertionError("the condition should have failed")
        answer = self.call("PutItem", request)
        assert answer.get("Attributes") == old
        self.model[(pk, sk)] = item

    @rule(
        pk=keys,
        sk=sort_keys,
        action=st.sampled_from(["set_v", "add_v", "inc_v", "remove_w", "set_w", "none"]),
        x=numbers,
        w=words,
        cond=conditions,
        c=numbers,
    )
    def update(self, pk: str, sk: str, action: str, x: int, w: str, cond: str, c: int) -> None:
        condition, holds = _condition(cond, c)
        old = self.model.get((pk, sk))
        request: dict[str, Any] = {
            "TableName": TABLE,
            "Key": self.key(pk, sk),
            "ReturnValues": "ALL_NEW",
        }
        new: Item = dict(old) if old is not None else self.key(pk, sk)
        error = None
        if action == "set_v":
            request.update(
                UpdateExpression="SET v = :x", ExpressionAttributeValues={":x": {"N": str(x)}}
            )
            new["v"] = {"N": str(x)}
        elif action == "add_v":
            request.update(
                UpdateExpression="ADD v :x", ExpressionAttributeValues={":x": {"N": str(x)}}
            )
            new["v"] = {"N": str(int(new.get("v", {"N": "0"})["N"]) + x)}
        elif action == "inc_v":
            request.update(
                UpdateExpression="SET v = v + :x", ExpressionAttributeValues={":x": {"N": str(x)}}
            )
            if "v" in new:
                new["v"] = {"N": str(int(new["v"]["N"]) + x)}
            else:
                error = (
                    "The provided expression refers to an attribute that does not exist in the item"
                )
        elif action == "remove_w":
            request.update(UpdateExpression="REMOVE w")
            new.pop("w", None)
        elif action == "set_w":
            request.update(
                UpdateExpression="SET #w = :w",
                ExpressionAttributeNames={"#w": "w"},
                ExpressionAttributeValues={":w": {"S": w}},
            )
            new["w"] = {"S": w}
        request = _merge(request, condition)
        if not holds(old):
            try:
                self.call("UpdateItem", request)
            except ConditionalCheckFailedException:
                return
            raise AssertionError("the condition should have failed")
        if error is not None:
            try:
                self.call("UpdateItem", request)
            except ValidationException as caught:
                assert caught.message == error
                return
            raise AssertionError("the update should have failed")
        answer = self.call("UpdateItem", request)
        assert answer == {"Attributes": new}
        self.model[(pk, sk)] = new

    @rule(pk=keys, sk=sort_keys, cond=conditions, c=numbers)
    def delete(self, pk: str, sk: str, cond: str, c: int) -> None:
        condition, holds = _condition(cond, c)
        old = self.model.get((pk, sk))
        request = _merge(
            {"TableName": TABLE, "Key": self.key(pk, sk), "ReturnValues": "ALL_OLD"}, condition
        )
        if not holds(old):
            try:
                self.call("DeleteItem", request)
            except ConditionalCheckFailedException:
                return
            raise AssertionError("the condition should have failed")
        answer = self.call("DeleteItem", request)
        assert answer.get("Attributes") == old
        self.model.pop((pk, sk), None)

    @rule(pk=keys, sk=sort_keys, consistent=st.booleans())
    def get(self, pk: str, sk: str, consistent: bool) -> None:
        answer = self.call(
            "GetItem", {"TableName": TABLE, "Key": self.key(pk, sk), "ConsistentRead": consistent}
        )
        assert answer.get("Item") == self.model.get((pk, sk))

    @rule(
        pk=keys,
        sk=sort_keys,
        names=st.lists(st.sampled_from(["v", "w", "pk"]), min_size=1, max_size=3, unique=True),
    )
    def get_projected(self, pk: str, sk: str, names: list[str]) -> None:
        placeholders = {f"#a{i}": name for i, name in enumerate(names)}
        answer = self.call(
            "GetItem",
            {
                "TableName": TABLE,
                "Key": self.key(pk, sk),
                "ProjectionExpression": ", ".join(placeholders),
                "ExpressionAttributeNames": placeholders,
            },
        )
        item = self.model.get((pk, sk))
        if item is None:
            assert answer == {}
        else:
            assert answer == {"Item": {name: item[name] for name in names if name in item}}

    @invariant()
    def statistics_match_the_model(self) -> None:
        table = find_table(self.db, TABLE)
        expected = (len(self.model), sum(item_size(item) for item in self.model.values()))
        assert table_stats(self.db, table) == expected

    @invariant()
    def nothing_is_left_pending(self) -> None:
        assert items_state(self.db).pending == {}


ItemOperations.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_item_operations_match_a_dict_model = ItemOperations.TestCase


# --- Concurrent writes: the answers of one-after-another execution, in arrival order ----------

from hypothesis import given


class HeldLog:
    """A log whose appends wait, in order, until `release()` commits and applies them."""

    def __init__(self, apply: Any, start_lsn: int) -> None:
        self._apply = apply
        self._lsn = start_lsn
        self._held: list[tuple[int, bytes, asyncio.Future[int]]] = []

    async def append(self, record: bytes) -> int:
        self._lsn += 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._held.append((self._lsn, record, future))
        return await future

    def release(self) -> None:
        held, self._held = self._held, []
        for lsn, record, future in held:
            self._apply([(lsn, record)])
            future.set_result(lsn)

    def committed_lsn(self) -> int:
        return self._lsn

    async def close(self) -> None:
        return None


write_ops = st.one_of(
    st.tuples(st.just("put"), keys, st.none() | numbers, conditions, numbers),
    st.tuples(
        st.just("update"),
        keys,
        st.sampled_from(["add", "inc", "set"]),
        numbers,
        conditions,
        numbers,
    ),
    st.tuples(st.just("delete"), keys, conditions, numbers),
)


def _write_request(op: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    kind, pk = op[0], op[1]
    key = {"pk": {"S": pk}, "sk": {"N": "1"}}
    if kind == "put":
        _, _, v, cond, c = op
        item = dict(key)
        if v is not None:
            item["v"] = {"N": str(v)}
        body = {"TableName": TABLE, "Item": item, "ReturnValues": "ALL_OLD"}
        return "PutItem", _merge(body, _condition(cond, c)[0])
    if kind == "update":
        _, _, action, x, cond, c = op
        expression = {"add": "ADD v :x", "inc": "SET v = v + :x", "set": "SET v = :x"}[action]
        body = {
            "TableName": TABLE,
            "Key": key,
            "UpdateExpression": expression,
            "ExpressionAttributeValues": {":x": {"N": str(x)}},
            "ReturnValues": "ALL_NEW",
        }
        return "UpdateItem", _merge(body, _condition(cond, c)[0])
    _, _, cond, c = op
    body = {"TableName": TABLE, "Key": key, "ReturnValues": "ALL_OLD"}
    return "DeleteItem", _merge(body, _condition(cond, c)[0])


def _outcome(result: Any) -> Any:
    if isinstance(result, BaseException):
        return (type(result).__name__, getattr(result, "message", str(result)))
    return result


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(write_ops, min_size=1, max_size=12),
    releases=st.sets(st.integers(min_value=0, max_value=11)),
)
def test_overlapping_writes_answer_as_if_run_one_after_another(
    ops: list[tuple[Any, ...]], releases: set[int]
) -> None:
    sequential = ItemOperations()
    concurrent = ItemOperations()
    try:
        expected = []
        for op in ops:
            try:
                expected.append(sequential.call(*_write_request(op)))
            except Exception as error:  # noqa: BLE001 - the outcome is compared, error or not
                expected.append(error)

        db = concurrent.db
        held = HeldLog(db.apply, db.log.committed_lsn())
        db._log = held

        async def run() -> list[Any]:
            tasks = []
            for index, op in enumerate(ops):
                tasks.append(asyncio.ensure_future(db.dispatch(*_write_request(op))))
                await asyncio.sleep(0)  # the write runs up to its append
                if index in releases:
                    held.release()
            held.release()
            return list(await asyncio.gather(*tasks, return_exceptions=True))

        got = concurrent.loop.run_until_complete(run())
        assert [_outcome(r) for r in got] == [_outcome(r) for r in expected]
        assert items_state(db).pending == {}
        for pk in {op[1] for op in ops}:
            key = {"pk": {"S": pk}, "sk": {"N": "1"}}
            body = {"TableName": TABLE, "Key": key, "ConsistentRead": True}
            assert concurrent.call("GetItem", body) == sequential.call("GetItem", body)
        assert table_stats(db, find_table(db, TABLE)) == table_stats(
            sequential.db, find_table(sequential.db, TABLE)
        )
    finally:
        sequential.teardown()
        concurrent.teardown()
