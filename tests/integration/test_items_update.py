"""UpdateItem through boto3 against the real server: every clause of the update language,
ReturnValues for nested paths, and the errors an update meets at run time."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError


@pytest.fixture
def table(ddb: Any, table_factory: Any) -> str:
    name: str = table_factory()
    ddb.put_item(
        TableName=name,
        Item={
            "pk": {"S": "a"},
            "n": {"N": "10"},
            "l": {"L": [{"S": "x"}, {"S": "y"}, {"S": "z"}]},
            "m": {"M": {"nest": {"M": {"deep": {"N": "1"}}}, "keep": {"S": "k"}}},
            "ss": {"SS": ["p", "q"]},
            "ns": {"NS": ["1", "2"]},
        },
    )
    return name


def update(ddb: Any, table: str, expression: str, **more: Any) -> dict[str, Any]:
    answer: dict[str, Any] = ddb.update_item(
        TableName=table, Key={"pk": {"S": "a"}}, UpdateExpression=expression, **more
    )
    return answer


def item(ddb: Any, table: str) -> dict[str, Any]:
    got: dict[str, Any] = ddb.get_item(TableName=table, Key={"pk": {"S": "a"}}, ConsistentRead=True)
    return got["Item"]


def test_set_arithmetic_and_functions(ddb: Any, table: str) -> None:
    update(
        ddb,
        table,
        "SET n = n - :one, c = if_not_exists(c, :zero) + :one, l = list_append(l, :more), "
        "m.nest.deep = :one",
        ExpressionAttributeValues={
            ":one": {"N": "1"},
            ":zero": {"N": "0"},
            ":more": {"L": [{"N": "4"}]},
        },
    )
    got = item(ddb, table)
    assert got["n"] == {"N": "9"}
    assert got["c"] == {"N": "1"}
    assert got["l"]["L"][-1] == {"N": "4"}
    assert got["m"]["M"]["nest"] == {"M": {"deep": {"N": "1"}}}


def test_remove_list_elements_uses_indexes_before_the_update(ddb: Any, table: str) -> None:
    update(ddb, table, "REMOVE l[0], l[2], m.keep")
    got = item(ddb, table)
    assert got["l"] == {"L": [{"S": "y"}]}
    assert got["m"] == {"M": {"nest": {"M": {"deep": {"N": "1"}}}}}


def test_add_and_delete_on_sets_and_numbers(ddb: Any, table: str) -> None:
    update(
        ddb,
        table,
        "ADD ns :three, n :five DELETE ss :p",
        ExpressionAttributeValues={
            ":three": {"NS": ["3"]},
            ":five": {"N": "5"},
            ":p": {"SS": ["p", "not-there"]},
        },
    )
    got = item(ddb, table)
    assert sorted(got["ns"]["NS"]) == ["1", "2", "3"]
    assert got["n"] == {"N": "15"}
    assert got["ss"] == {"SS": ["q"]}
    update(ddb, table, "DELETE ss :q", ExpressionAttributeValues={":q": {"SS": ["q"]}})
    assert "ss" not in item(ddb, table)


def test_updated_new_and_old_project_nested_paths(ddb: Any, table: str) -> None:
    answer = update(
        ddb,
        table,
        "SET m.nest.deep = :v, l[1] = :v",
        ExpressionAttributeValues={":v": {"S": "new"}},
        ReturnValues="UPDATED_OLD",
    )
    assert answer["Attributes"] == {
        "m": {"M": {"nest": {"M": {"deep": {"N": "1"}}}}},
        "l": {"L": [{"S": "y"}]},
    }
    answer = update(
        ddb,
        table,
        "SET m.nest.deep = :w",
        ExpressionAttributeValues={":w": {"S": "newer"}},
        ReturnValues="UPDATED_NEW",
    )
    assert answer["Attributes"] == {"m": {"M": {"nest": {"M": {"deep": {"S": "newer"}}}}}}


def test_run_time_update_errors_are_bare_validation_exceptions(ddb: Any, table: str) -> None:
    cases = [
        (
            "SET n = m + :one",
            {":one": {"N": "1"}},
            "An operand in the update expression has an incorrect data type",
        ),
        (
            "SET z = nothing",
            None,
            "The provided expression refers to an attribute that does not exist in the item",
        ),
        (
            "SET n.x = :s",
            {":s": {"S": "x"}},
            "The document path provided in the update expression is invalid for update",
        ),
    ]
    before = item(ddb, table)
    for expression, values, message in cases:
        more = {} if values is None else {"ExpressionAttributeValues": values}
        with pytest.raises(ClientError) as caught:
            update(ddb, table, expression, **more)
        assert caught.value.response["Error"]["Code"] == "ValidationException"
        assert caught.value.response["Error"]["Message"] == message
    assert item(ddb, table) == before


def test_syntax_errors_are_enveloped(ddb: Any, table: str) -> None:
    with pytest.raises(ClientError) as caught:
        update(ddb, table, "SET")
    message = caught.value.response["Error"]["Message"]
    assert message.startswith(
        "1 validation error detected: Invalid UpdateExpression: Syntax error;"
    )
