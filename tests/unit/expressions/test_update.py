"""UpdateExpression applied with DynamoDB's semantics, and what it reports as changed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from keeldb.expressions import ExpressionContext
from keeldb.model.errors import ValidationException

VALUES: dict[str, Any] = {
    ":one": {"N": "1"},
    ":two": {"N": "2.0"},
    ":x": {"S": "x"},
    ":l": {"L": [{"N": "9"}]},
    ":ss": {"SS": ["b", "c"]},
    ":ns": {"NS": ["1"]},
    ":big": {"N": "9.9999999999999999999999999999999999999E+125"},
}

BASE: dict[str, Any] = {
    "pk": {"S": "k"},
    "n": {"N": "5"},
    "s": {"S": "str"},
    "l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}]},
    "m": {"M": {"a": {"M": {"b": {"N": "1"}}}}},
    "ss": {"SS": ["a", "b"]},
}


def run(text: str, item: dict[str, Any] | None = None) -> dict[str, Any]:
    before = copy.deepcopy(BASE if item is None else item)
    frozen = copy.deepcopy(before)
    update = ExpressionContext(None, dict(VALUES)).update(text)
    after, _ = update.apply(before)
    assert before == frozen, "apply must not change its input"
    return after


def fails(text: str, item: dict[str, Any] | None = None) -> str:
    with pytest.raises(ValidationException) as caught:
        run(text, item)
    return caught.value.message


INVALID_PATH = "The document path provided in the update expression is invalid for update"
BAD_TYPE = "An operand in the update expression has an incorrect data type"
MISSING = "The provided expression refers to an attribute that does not exist in the item"


def test_set_writes_top_level_and_nested_attributes() -> None:
    after = run("SET x = :x, m.a.c = :one, m.a.b = :two")
    assert after["x"] == {"S": "x"}
    assert after["m"] == {"M": {"a": {"M": {"b": {"N": "2"}, "c": {"N": "1"}}}}}


def test_set_arithmetic_on_numbers() -> None:
    assert run("SET n = n + :one")["n"] == {"N": "6"}
    assert run("SET n = n - :two")["n"] == {"N": "3"}
    assert run("SET y = :one - n")["y"] == {"N": "-4"}


def test_arithmetic_on_a_non_number_is_an_incorrect_data_type() -> None:
    assert fails("SET n = s + :one") == BAD_TYPE


def test_arithmetic_overflow_reports_dynamodbs_number_error() -> None:
    assert "Number overflow" in fails("SET n = :big + :big")


def test_a_missing_operand_is_reported() -> None:
    assert fails("SET n = nope + :one") == MISSING
    assert fails("SET n = nope") == MISSING


def test_if_not_exists_uses_the_attribute_when_present() -> None:
    assert run("SET n = if_not_exists(n, :one)")["n"] == {"N": "5"}
    assert run("SET y = if_not_exists(y, :one)")["y"] == {"N": "1"}
    assert run("SET y = if_not_exists(y, :one) + :one")["y"] == {"N": "2"}


def test_list_append_joins_two_lists_in_order() -> None:
    assert run("SET l = list_append(l, :l)")["l"]["L"][-1] == {"N": "9"}
    assert run("SET l = list_append(:l, l)")["l"]["L"][0] == {"N": "9"}
    assert fails("SET l = list_append(l, s)") == BAD_TYPE


def test_set_past_the_end_of_a_list_appends() -> None:
    assert run("SET l[10] = :x")["l"]["L"] == [
        {"N": "0"},
        {"N": "1"},
        {"N": "2"},
        {"N": "3"},
        {"S": "x"},
    ]
    assert run("SET l[1] = :x")["l"]["L"][1] == {"S": "x"}


def test_set_into_a_missing_or_wrong_type_parent_is_invalid() -> None:
    assert fails("SET nope.a = :x") == INVALID_PATH
    assert fails("SET s.a = :x") == INVALID_PATH
    assert fails("SET m[0] = :x") == INVALID_PATH
    assert fails("SET l.a = :x") == INVALID_PATH
    assert fails("SET m.zz.yy = :x") == INVALID_PATH


def test_remove_deletes_attributes_and_shifts_list_elements() -> None:
    after = run("REMOVE s, m.a.b, l[1]")
    assert "s" not in after
    assert after["m"] == {"M": {"a": {"M": {}}}}
    assert after["l"]["L"] == [{"N": "0"}, {"N": "2"}, {"N": "3"}]


def test_remove_of_several_list_elements_uses_the_original_indexes() -> None:
    assert run("REMOVE l[0], l[2]")["l"]["L"] == [{"N": "1"}, {"N": "3"}]


def test_remove_of_something_absent_changes_nothing() -> None:
    assert run("REMOVE nope, l[99], m.a.zz") == BASE


def test_remove_below_a_missing_or_wrong_type_parent_is_invalid() -> None:
    assert fails("REMOVE m.zz.yy") == INVALID_PATH
    assert fails("REMOVE s.a") == INVALID_PATH
    assert fails("REMOVE s[0]") == INVALID_PATH
    assert fails("REMOVE nope[0]") == INVALID_PATH


def test_remove_from_an_absent_item_is_ignored_whatever_the_path() -> None:
    update = ExpressionContext(None, None).update("REMOVE x.y, z[0]")
    after, _ = update.apply(None)
    assert after == {}


def test_several_appends_to_one_list_go_in_index_order() -> None:
    after = run("SET l[84] = :x, l[37] = :one, l[17] = :two")
    assert after["l"]["L"][4:] == [{"N": "2"}, {"N": "1"}, {"S": "x"}]


def test_indexes_of_set_and_remove_both_refer_to_the_list_before_the_update() -> None:
    values = {":v": {"N": "17"}}
    item = {"a": {"L": [{"N": str(n)} for n in (2, 3, 4, 5, 6, 7)]}}
    for text in ("REMOVE a[1] SET a[3] = :v", "SET a[3] = :v REMOVE a[1]"):
        after, _ = ExpressionContext(None, dict(values)).update(text).apply(item)
        assert after["a"]["L"] == [{"N": str(n)} for n in (2, 4, 17, 6, 7)]


def test_add_to_numbers_and_missing_attributes() -> None:
    assert run("ADD n :one")["n"] == {"N": "6"}
    assert run("ADD fresh :two")["fresh"] == {"N": "2"}


def test_add_to_sets_unions_them() -> None:
    assert sorted(run("ADD ss :ss")["ss"]["SS"]) == ["a", "b", "c"]
    assert run("ADD fresh :ns")["fresh"] == {"NS": ["1"]}


def test_add_of_a_mismatched_type_is_an_incorrect_data_type() -> None:
    assert fails("ADD s :one") == BAD_TYPE
    assert fails("ADD ss :ns") == BAD_TYPE


def test_delete_removes_set_elements_and_the_attribute_when_empty() -> None:
    assert run("DELETE ss :ss")["ss"] == {"SS": ["a"]}
    item = dict(BASE, ss={"SS": ["b", "c"]})
    assert "ss" not in run("DELETE ss :ss", item)
    assert run("DELETE nope :ss") == BASE
    assert fails("DELETE n :ns") == BAD_TYPE


def test_every_operand_reads_the_item_before_the_update() -> None:
    after = run("SET n = :one, x = n")
    assert after["x"] == {"N": "5"}


def test_update_of_an_absent_item_starts_from_nothing() -> None:
    update = ExpressionContext(None, dict(VALUES)).update("SET a = :x ADD c :one")
    after, effect = update.apply(None)
    assert after == {"a": {"S": "x"}, "c": {"N": "1"}}
    assert effect.updated_old() == {}
    assert effect.updated_new() == after


def test_effect_reports_touched_paths_before_and_after() -> None:
    update = ExpressionContext(None, dict(VALUES)).update("SET m.a.b = :two, x = :x REMOVE s")
    after, effect = update.apply(copy.deepcopy(BASE))
    assert after["x"] == {"S": "x"}
    assert effect.updated_old() == {"m": {"M": {"a": {"M": {"b": {"N": "1"}}}}}, "s": {"S": "str"}}
    assert effect.updated_new() == {"m": {"M": {"a": {"M": {"b": {"N": "2"}}}}}, "x": {"S": "x"}}


def test_top_level_attributes_names_every_written_attribute() -> None:
    update = ExpressionContext(None, dict(VALUES)).update(
        "SET m.a = :x, pk = :x REMOVE s ADD n :one"
    )
    assert update.top_level_attributes() == {"m", "pk", "s", "n"}


def test_updated_values_project_nested_paths_as_dynamodb_does() -> None:
    item = {"a": {"M": {"b": {"S": "dog"}, "c": {"L": [{"N": "1"}, {"N": "2"}, {"N": "3"}]}}}}

    def effect(text: str) -> Any:
        values = {":v": {"N": "7"}, ":w": {"S": "hi"}}
        return ExpressionContext(None, values).update(text).apply(copy.deepcopy(item))[1]

    both = effect("SET a.c[1] = :v, a.b = :w")
    assert both.updated_old() == {"a": {"M": {"b": {"S": "dog"}, "c": {"L": [{"N": "2"}]}}}}
    assert both.updated_new() == {"a": {"M": {"b": {"S": "hi"}, "c": {"L": [{"N": "7"}]}}}}
    # A new sub-attribute has no old value; an element set past the end of a list is
    # appended elsewhere, so the path names nothing afterwards.
    assert effect("SET a.x = :v").updated_old() == {}
    assert effect("SET a.c[100] = :v").updated_new() == {}
    # After REMOVE of a list element the next element has moved into its place.
    assert effect("REMOVE a.c[1]").updated_new() == {"a": {"M": {"c": {"L": [{"N": "3"}]}}}}
