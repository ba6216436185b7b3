"""UpdateItem through `Database.dispatch` answers and stores exactly the same with update
plans as without them: the same seeded sequence of requests (top-level SET, REMOVE, ADD and
DELETE by placeholder, names maps and value types changing between requests, nested paths,
functions, type errors, key attributes, items over the size limit, every ReturnValues, and
the same kinds of change through AttributeUpdates) is sent to two databases, one whose
updates are never planned, and every answer, error and stored item is compared."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest

from keeldb.engine.database import Database
from keeldb.expressions import context as expression_context
from keeldb.expressions.context import RESOLVED_CACHE
from keeldb.expressions.plan import UpdatePlan
from keeldb.model.errors import ClientError
from keeldb.storage.memory import MemoryLog, MemoryStore

TABLE = "updates"
KEYS = 6
ATTRIBUTES = ("a", "b", "c", "d")
RETURN_VALUES = ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW")


@pytest.fixture(autouse=True)
def cold_cache() -> Iterator[None]:
    RESOLVED_CACHE.clear()
    yield
    RESOLVED_CACHE.clear()


class Node:
    """A database over a MemoryStore and MemoryLog, with a private event loop."""

    def __init__(self) -> None:
        self.db = Database(MemoryStore())
        self.db.attach_log(MemoryLog(self.db.apply))
        self.loop = asyncio.new_event_loop()
        self.call(
            "CreateTable",
            {
                "TableName": TABLE,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )

    def call(self, operation: str, body: dict[str, Any]) -> Any:
        try:
            return ("ok", self.loop.run_until_complete(self.db.dispatch(operation, body)))
        except ClientError as error:
            return ("error", type(error).__name__, str(error))

    def items(self) -> list[Any]:
        answers = []
        for i in range(KEYS):
            answer = self.call("GetItem", {"TableName": TABLE, "Key": {"pk": {"S": f"k{i}"}}})
            item = answer[1].get("Item") if answer[0] == "ok" else answer
            answers.append(None if item is None else list(item.items()))
        return answers

    def close(self) -> None:
        self.loop.close()


def value(rng: random.Random) -> dict[str, Any]:
    kind = rng.randrange(7)
    if kind == 0:
        return {"S": rng.choice(("x", "y", ""))}
    if kind == 1:
        return {"N": str(rng.randrange(-3, 4))}
    if kind == 2:
        return {"SS": rng.sample(("p", "q", "r"), rng.randrange(1, 3))}
    if kind == 3:
        return {"NS": rng.sample(("1", "2", "3"), rng.randrange(1, 3))}
    if kind == 4:
        return {"L": [{"S": "e"}] * rng.randrange(3)}
    if kind == 5:
        return {"M": {"m": {"N": "1"}}}
    return {"BOOL": rng.random() < 0.5}


def legacy_request(rng: random.Random) -> dict[str, Any]:
    """The same kinds of change through AttributeUpdates (translated into an expression)."""
    updates: dict[str, Any] = {}
    for attribute in rng.sample(ATTRIBUTES, rng.randrange(1, 4)):
        action = rng.choice(("PUT", "ADD", "DELETE", "DELETE_ALL"))
        if action == "DELETE_ALL":
            updates[attribute] = {"Action": "DELETE"}
        else:
            updates[attribute] = {"Action": action, "Value": value(rng)}
    return {
        "TableName": TABLE,
        "Key": {"pk": {"S": f"k{rng.randrange(KEYS)}"}},
        "AttributeUpdates": updates,
        "ReturnValues": rng.choice(RETURN_VALUES),
    }


def request(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.15:
        return legacy_request(rng)
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    clauses: dict[str, list[str]] = {}
    chosen = rng.sample(ATTRIBUTES, rng.randrange(1, 4))
    if rng.random() < 0.05:
        chosen.append("pk")  # a key attribute: refused
    for i, attribute in enumerate(chosen):
        path = attribute
        if rng.random() < 0.6:
            path = f"#n{i}"
            names[path] = attribute
        kind = rng.choice(("SET", "SET", "SET", "REMOVE", "ADD", "DELETE"))
        shape = rng.random()
        if kind == "REMOVE":
            clauses.setdefault(kind, []).append(path if shape < 0.9 else f"{path}.m")
            continue
        placeholder = f":v{i}"
        values[placeholder] = value(rng)
        if kind == "SET":
            if shape < 0.75:
                operand = placeholder
            elif shape < 0.85:
                operand = f"if_not_exists({path}, {placeholder})"
            elif shape < 0.95:
                path = f"{path}.m"
                operand = placeholder
            else:
                operand = f"{placeholder} + {placeholder}"
            clauses.setdefault(kind, []).append(f"{path} = {operand}")
        else:
            clauses.setdefault(kind, []).append(f"{path} {placeholder}")
    if rng.random() < 0.03:
        values[":big"] = {"S": "z" * (400 * 1024)}  # over the item size limit once stored
        clauses.setdefault("SET", []).append("big = :big")
    body: dict[str, Any] = {
        "TableName": TABLE,
        "Key": {"pk": {"S": f"k{rng.randrange(KEYS)}"}},
        "UpdateExpression": " ".join(f"{k} {', '.join(v)}" for k, v in clauses.items()),
        "ReturnValues": rng.choice(RETURN_VALUES),
    }
    if rng.random() < 0.03 and values:
        values[":unused"] = {"N": "1"}  # refused: unused in expressions
    if names:
        body["ExpressionAttributeNames"] = names
    if values:
        body["ExpressionAttributeValues"] = values
    return body


def differences(monkeypatch: pytest.MonkeyPatch, seed: int) -> list[Any]:
    """The requests of a seeded sequence whose answer differs with plans and without, and
    whether the stored items differ at the end."""
    rng = random.Random(seed)
    requests = [request(rng) for _ in range(250)]
    planned, general = Node(), Node()
    try:
        planned_answers = [planned.call("UpdateItem", body) for body in requests]
        planned_items = planned.items()
        RESOLVED_CACHE.clear()
        with monkeypatch.context() as patch:
            patch.setattr(expression_context, "plan_update", lambda tree, slots: None)
            general_answers = [general.call("UpdateItem", body) for body in requests]
        general_items = general.items()
    finally:
        planned.close()
        general.close()
    # The sequence exercises both outcomes and leaves most items stored.
    assert {answer[0] for answer in planned_answers} == {"ok", "error"}
    assert sum(item is not None for item in general_items) >= KEYS // 2
    found: list[Any] = [
        (body, mine, theirs)
        for body, mine, theirs in zip(requests, planned_answers, general_answers)
        if mine != theirs
    ]
    if planned_items != general_items:
        found.append("stored items")
    return found


@pytest.mark.interpreted
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_update_item_answers_and_stores_the_same_with_and_without_plans(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    assert differences(monkeypatch, seed) == []


def _unordered_apply(self: UpdatePlan, values: dict[str, Any], item: Any) -> Any:
    """A broken plan: writes in the order written, not in path order."""
    broken = UpdatePlan(tuple(reversed(self.writes)), self.removals, self.paths)
    return _planned_apply(broken, values, item)


def _forgetful_apply(self: UpdatePlan, values: dict[str, Any], item: Any) -> Any:
    """A broken plan: it forgets its removals."""
    broken = UpdatePlan(self.writes, (), self.paths)
    return _planned_apply(broken, values, item)


_planned_apply = UpdatePlan.apply


@pytest.mark.interpreted
@pytest.mark.parametrize("broken", [_unordered_apply, _forgetful_apply])
def test_the_comparison_catches_a_broken_plan(monkeypatch: pytest.MonkeyPatch, broken: Any) -> None:
    monkeypatch.setattr(UpdatePlan, "apply", broken)
    assert any(differences(monkeypatch, seed) for seed in (1, 2, 3))


def test_the_plans_are_used_for_the_common_shapes() -> None:
    node = Node()
    try:
        for field in ("a", "b", "a"):
            answer = node.call(
                "UpdateItem",
                {
                    "TableName": TABLE,
                    "Key": {"pk": {"S": "k0"}},
                    "UpdateExpression": "SET #f = :v",
                    "ExpressionAttributeNames": {"#f": field},
                    "ExpressionAttributeValues": {":v": {"S": field * 2}},
                    "ReturnValues": "UPDATED_NEW",
                },
            )
            assert answer == ("ok", {"Attributes": {field: {"S": field * 2}}})
        assert node.items()[0] == [("pk", {"S": "k0"}), ("a", {"S": "aa"}), ("b", {"S": "bb"})]
    finally:
        node.close()
    plans = [entry.plan for entry in RESOLVED_CACHE._entries.values()]
    assert len(plans) == 2
    assert all(plan is not None for plan in plans)
