"""An update builds its new item by copying only what it changes: the old item is never
changed, and the attributes the update leaves alone are shared with it."""

from __future__ import annotations

import copy
from typing import Any

from keeldb.expressions.context import ExpressionContext


def _apply(expression: str, item: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    update = ExpressionContext(None, values).update(expression)
    new, _ = update.apply(item)
    return new


def _item() -> dict[str, Any]:
    return {
        "id": {"S": "k"},
        "doc": {"M": {"inside": {"L": [{"N": "1"}, {"N": "2"}]}, "label": {"S": "x"}}},
        "tags": {"SS": ["a"]},
        "untouched": {"M": {"deep": {"L": [{"S": "keep"}]}}},
    }


def test_nested_set_add_and_remove_leave_the_old_item_unchanged() -> None:
    old = _item()
    snapshot = copy.deepcopy(old)
    new = _apply(
        "SET doc.inside[0] = :one, doc.label = :name ADD tags :t REMOVE doc.inside[1]",
        old,
        {":one": {"N": "9"}, ":name": {"S": "y"}, ":t": {"SS": ["b"]}},
    )
    assert old == snapshot
    assert new["doc"] == {"M": {"inside": {"L": [{"N": "9"}]}, "label": {"S": "y"}}}
    assert sorted(new["tags"]["SS"]) == ["a", "b"]


def test_attributes_the_update_does_not_touch_are_shared_not_copied() -> None:
    old = _item()
    new = _apply("SET doc.label = :v", old, {":v": {"S": "z"}})
    assert new["untouched"] is old["untouched"]
    assert new["tags"] is old["tags"]
    assert new["doc"] is not old["doc"]
    assert old["doc"]["M"]["label"] == {"S": "x"}


def test_changing_the_new_item_later_cannot_reach_the_old_one_through_touched_paths() -> None:
    old = _item()
    new = _apply("SET doc.inside[5] = :v", old, {":v": {"N": "3"}})
    new["doc"]["M"]["inside"]["L"].append({"N": "4"})
    assert old["doc"]["M"]["inside"]["L"] == [{"N": "1"}, {"N": "2"}]
