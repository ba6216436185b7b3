"""ExecuteStatement and BatchExecuteStatement driven through `Database.dispatch` over an
in-memory store and log: each statement form, paging with NextToken, and DynamoDB's error
types and messages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from keeldb.engine.database import Database
from keeldb.model.errors import (
    ClientError,
    ConditionalCheckFailedException,
    DuplicateItemException,
    ResourceNotFoundException,
    ValidationException,
)
from keeldb.storage.memory import MemoryLog, MemoryStore


class Harness:
    """A database over a MemoryStore and MemoryLog, with a private event loop."""

    def __init__(self) -> None:
        self.db = Database(MemoryStore())
        self.db.attach_log(MemoryLog(self.db.apply))
        self.loop = asyncio.new_event_loop()

    def __call__(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.loop.run_until_complete(self.db.dispatch(operation, body))

    def run(self, statement: str, *parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"Statement": statement, **extra}
        if parameters:
            body["Parameters"] = list(parameters)
        return self("ExecuteStatement", body)

    def error(self, statement: str, *parameters: dict[str, Any], **extra: Any) -> ClientError:
        with pytest.raises(ClientError) as caught:
            self.run(statement, *parameters, **extra)
        return caught.value

    def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self("GetItem", {"TableName": table, "Key": key}).get("Item")
        return item

    def create(self, name: str, keys: list[tuple[str, str, str]], **extra: Any) -> None:
        definitions = [{"AttributeName": a, "AttributeType": t} for a, t, _ in keys]
        definitions.extend(extra.pop("more_definitions", []))
        self(
            "CreateTable",
            {
                "TableName": name,
                "KeySchema": [{"AttributeName": a, "KeyType": k} for a, _, k in keys],
                "AttributeDefinitions": definitions,
                "BillingMode": "PAY_PER_REQUEST",
                **extra,
            },
        )


def s(text: str) -> dict[str, str]:
    return {"S": text}


def n(text: str) -> dict[str, str]:
    return {"N": text}


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    harness.create("Music", [("Artist", "S", "HASH"), ("SongTitle", "S", "RANGE")])
    harness.create("Simple", [("id", "N", "HASH")])
    yield harness
    harness.loop.close()


def song(artist: str, title: str, **more: dict[str, Any]) -> dict[str, Any]:
    return {"Artist": s(artist), "SongTitle": s(title), **more}


def put(h: Harness, item: dict[str, Any], table: str = "Music") -> None:
    h("PutItem", {"TableName": table, "Item": item})


# --- INSERT ---------------------------------------------------------------------------------


def test_insert_writes_the_item_with_every_literal_type(h: Harness) -> None:
    answer = h.run(
        "INSERT INTO Music VALUE {'Artist': 'Acme', 'SongTitle': 'Rocks', 'Year': 2021, "
        "'Live': TRUE, 'Gone': NULL, 'Tags': <<'a', 'b'>>, 'Nums': <<1, 2>>, "
        "'Info': {'label': 'x', 'list': [1, 'two', FALSE]}}"
    )
    assert answer == {"Items": []}
    assert h.get("Music", {"Artist": s("Acme"), "SongTitle": s("Rocks")}) == song(
        "Acme",
        "Rocks",
        Year=n("2021"),
        Live={"BOOL": True},
        Gone={"NULL": True},
        Tags={"SS": ["a", "b"]},
        Nums={"NS": ["1", "2"]},
        Info={"M": {"label": s("x"), "list": {"L": [n("1"), s("two"), {"BOOL": False}]}}},
    )


def test_insert_stores_the_number_literal_with_its_value(h: Harness) -> None:
    h.run("INSERT INTO Simple VALUE {'id': 1, 'price': -1.5e2}")
    item = h.get("Simple", {"id": n("1")})
    assert item is not None
    assert float(item["price"]["N"]) == -150.0


def test_insert_binds_parameters_in_order(h: Harness) -> None:
    h.run(
        "INSERT INTO \"Music\" VALUE {'Artist': ?, 'SongTitle': ?, 'n': ?}", s("A"), s("T"), n("7")
    )
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("T")}) == song("A", "T", n=n("7"))


def test_insert_of_an_existing_key_is_a_duplicate_item(h: Harness) -> None:
    put(h, song("A", "T", v=n("1")))
    error = h.error("INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'T', 'v': 2}")
    assert isinstance(error, DuplicateItemException)
    assert error.message == "Duplicate primary key exists in table"
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("T")}) == song("A", "T", v=n("1"))


def test_insert_without_the_key_is_refused(h: Harness) -> None:
    error = h.error("INSERT INTO Music VALUE {'Artist': 'A'}")
    assert isinstance(error, ValidationException)
    assert error.message == "Key attribute should be present in the item: Key SongTitle"


def test_insert_with_returning_is_refused(h: Harness) -> None:
    error = h.error("INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'T'} RETURNING ALL OLD *")
    assert error.message == "RETURNING is not supported in INSERT"


def test_insert_of_a_non_struct_is_refused(h: Harness) -> None:
    error = h.error("INSERT INTO Music VALUE ['a']")
    assert error.message.startswith("Unsupported format in item expression.")


# --- UPDATE ---------------------------------------------------------------------------------


def test_update_sets_adds_and_removes_and_returns_the_new_item(h: Harness) -> None:
    put(h, song("A", "T", n=n("1"), tags={"SS": ["a"]}, gone=s("x"), l={"L": [n("1")]}))
    answer = h.run(
        "UPDATE Music SET n = n + 2 SET tags = set_add(tags, <<'b'>>), "
        "l = list_append(l, [2]) REMOVE gone WHERE Artist = 'A' AND SongTitle = 'T' "
        "RETURNING ALL NEW *"
    )
    expected = song("A", "T", n=n("3"), tags={"SS": ["a", "b"]}, l={"L": [n("1"), n("2")]})
    assert answer == {"Items": [expected]}
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("T")}) == expected


def test_update_set_delete_removes_set_members(h: Harness) -> None:
    put(h, song("A", "T", tags={"SS": ["a", "b"]}))
    h.run("UPDATE Music SET tags = set_delete(tags, <<'a'>>) WHERE Artist='A' AND SongTitle='T'")
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("T")}) == song(
        "A", "T", tags={"SS": ["b"]}
    )


def test_update_returning_modified_old_gives_the_changed_attributes_before(h: Harness) -> None:
    put(h, song("A", "T", a=n("1"), b=n("2")))
    answer = h.run(
        "UPDATE Music SET a = 5 WHERE Artist='A' AND SongTitle='T' RETURNING MODIFIED OLD *"
    )
    assert answer == {"Items": [{"a": n("1")}]}


def test_update_without_returning_answers_no_items(h: Harness) -> None:
    put(h, song("A", "T"))
    assert h.run("UPDATE Music SET a = 5 WHERE Artist='A' AND SongTitle='T'") == {"Items": []}


def test_update_of_a_missing_item_fails_its_condition(h: Harness) -> None:
    error = h.error("UPDATE Music SET a = 1 WHERE Artist = 'A' AND SongTitle = 'none'")
    assert isinstance(error, ConditionalCheckFailedException)
    assert error.message == "The conditional request failed"
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("none")}) is None


def test_update_with_a_false_extra_condition_fails_and_can_return_the_old_item(h: Harness) -> None:
    put(h, song("A", "T", a=n("1")))
    error = h.error(
        "UPDATE Music SET a = 2 WHERE Artist = 'A' AND SongTitle = 'T' AND a = 9",
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )
    assert isinstance(error, ConditionalCheckFailedException)
    assert error.item == song("A", "T", a=n("1"))


def test_update_with_a_true_extra_condition_writes(h: Harness) -> None:
    put(h, song("A", "T", a=n("1")))
    h.run("UPDATE Music SET a = 2 WHERE SongTitle = 'T' AND a = 1 AND Artist = ?", s("A"))
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("T")}) == song("A", "T", a=n("2"))


def test_update_without_the_whole_key_is_refused(h: Harness) -> None:
    error = h.error("UPDATE Music SET a = 1 WHERE Artist = 'A'")
    assert isinstance(error, ValidationException)
    assert (
        error.message == "Where clause does not contain a mandatory equality on all key attributes"
    )


def test_update_of_a_key_attribute_is_refused(h: Harness) -> None:
    put(h, song("A", "T"))
    error = h.error("UPDATE Music SET SongTitle = 'U' WHERE Artist = 'A' AND SongTitle = 'T'")
    assert isinstance(error, ValidationException)
    assert "SongTitle" in error.message


def test_update_set_add_on_another_attribute_is_refused(h: Harness) -> None:
    error = h.error("UPDATE Music SET a = set_add(b, <<'x'>>) WHERE Artist='A' AND SongTitle='T'")
    assert error.message == "The first argument to SET_ADD must equal the assignment value"


# --- DELETE ---------------------------------------------------------------------------------


def test_delete_removes_the_item_and_can_return_it(h: Harness) -> None:
    put(h, song("A", "T", a=n("1")))
    answer = h.run("DELETE FROM Music WHERE Artist = 'A' AND SongTitle = 'T' RETURNING ALL OLD *")
    assert answer == {"Items": [song("A", "T", a=n("1"))]}
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("T")}) is None


def test_delete_of_a_missing_item_succeeds(h: Harness) -> None:
    assert h.run("DELETE FROM Music WHERE Artist = 'A' AND SongTitle = 'none' AND a = 1") == {
        "Items": []
    }


def test_delete_with_a_compound_extra_condition_checks_it(h: Harness) -> None:
    put(h, song("A", "T", a=n("1"), b=n("2")))
    error = h.error(
        "DELETE FROM Music WHERE Artist = 'A' AND SongTitle = 'T' AND (a = 2 OR b BETWEEN 3 AND 4)"
    )
    assert isinstance(error, ConditionalCheckFailedException)
    h.run(
        "DELETE FROM Music WHERE Artist = 'A' AND SongTitle = 'T' AND (a = 2 OR b BETWEEN 1 AND 4)"
    )
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("T")}) is None


def test_delete_of_an_item_failing_the_extra_condition_is_refused(h: Harness) -> None:
    put(h, song("A", "T", a=n("1")))
    error = h.error("DELETE FROM Music WHERE Artist = 'A' AND SongTitle = 'T' AND a = 2")
    assert isinstance(error, ConditionalCheckFailedException)
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("T")}) is not None


def test_delete_returning_new_values_is_refused(h: Harness) -> None:
    error = h.error("DELETE FROM Music WHERE Artist = 'A' AND SongTitle = 'T' RETURNING ALL NEW *")
    assert error.message == (
        "Invalid returning clause: RETURNING ALL NEW *. Only RETURNING ALL OLD * is allowed in "
        "DELETE statements."
    )


def test_delete_without_the_whole_key_is_refused(h: Harness) -> None:
    error = h.error("DELETE FROM Music WHERE SongTitle = 'T'")
    assert (
        error.message == "Where clause does not contain a mandatory equality on all key attributes"
    )


# --- SELECT ---------------------------------------------------------------------------------


@pytest.fixture
def songs(h: Harness) -> Harness:
    for artist in ("A", "B"):
        for i in range(5):
            put(h, song(artist, f"t{i}", i=n(str(i)), even={"BOOL": i % 2 == 0}))
    return h


def titles(answer: dict[str, Any]) -> list[str]:
    return [item["SongTitle"]["S"] for item in answer["Items"]]


def test_select_star_without_where_scans_the_whole_table(songs: Harness) -> None:
    answer = songs.run("SELECT * FROM Music")
    assert len(answer["Items"]) == 10
    assert song("B", "t3", i=n("3"), even={"BOOL": False}) in answer["Items"]


def test_select_on_the_partition_key_queries_in_sort_key_order(songs: Harness) -> None:
    assert titles(songs.run("SELECT * FROM Music WHERE Artist = 'A'")) == [
        f"t{i}" for i in range(5)
    ]


def test_select_order_by_descending_reverses_the_query(songs: Harness) -> None:
    answer = songs.run("SELECT * FROM Music WHERE Artist = 'A' ORDER BY SongTitle DESC")
    assert titles(answer) == [f"t{i}" for i in reversed(range(5))]


def test_select_with_sort_key_conditions_and_a_filter(songs: Harness) -> None:
    answer = songs.run(
        "SELECT SongTitle FROM Music WHERE Artist = ? AND SongTitle BETWEEN 't1' AND 't4' "
        "AND even = TRUE",
        s("B"),
    )
    assert answer["Items"] == [{"SongTitle": s("t2")}, {"SongTitle": s("t4")}]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("i > 2", {"t3", "t4"}),
        ("i >= 2 AND i <= 3", {"t2", "t3"}),
        ("i < 1 OR i = 4", {"t0", "t4"}),
        ("i <> 0 AND NOT (i > 1)", {"t1"}),
        ("i != 0 AND i < 2", {"t1"}),
        ("i IN [1, 3]", {"t1", "t3"}),
        ("i IN (0, 4)", {"t0", "t4"}),
        ("begins_with(SongTitle, 't2')", {"t2"}),
        ("contains(SongTitle, '3')", {"t3"}),
        ("attribute_type(i, 'N') AND i = 0", {"t0"}),
        ("absent IS MISSING AND i = 1", {"t1"}),
        ("i IS NOT MISSING AND i = 2", {"t2"}),
        ("even IS BOOLEAN AND i = 3", {"t3"}),
        ("size(SongTitle) = 2 AND i BETWEEN 3 AND 4", {"t3", "t4"}),
        ("2 < i", {"t3", "t4"}),
        ("i BETWEEN 3 AND 1", set()),
        ("NOT (i BETWEEN 1 AND 3) AND (i = 0 OR i = 4)", {"t0", "t4"}),
        ("NOT (i = 1 OR i = 2) AND NOT i IS MISSING AND i < 4", {"t0", "t3"}),
        ("(i = 1 AND even = FALSE) OR (i BETWEEN 3 AND 4 AND NOT even = TRUE)", {"t1", "t3"}),
        ("i IS NOT NUMERIC OR i = 2", {"t2"}),
    ],
)
def test_select_where_forms_filter_a_scan(songs: Harness, where: str, expected: set[str]) -> None:
    answer = songs.run(f"SELECT * FROM Music WHERE Artist = 'A' AND ({where})")
    assert set(titles(answer)) == expected
    scanned = songs.run(f"SELECT * FROM Music WHERE {where}")
    assert set(titles(scanned)) == expected


def test_select_answers_nested_paths_under_their_last_part(h: Harness) -> None:
    put(h, song("A", "T", info={"M": {"a": {"L": [n("1"), n("2")]}, "b": s("x")}}))
    answer = h.run(
        "SELECT info.a[1], info.b, \"SongTitle\", info.none FROM Music WHERE Artist = 'A'"
    )
    assert answer["Items"] == [{"a[1]": n("2"), "b": s("x"), "SongTitle": s("T")}]


def test_select_refuses_two_paths_with_one_answer_name(h: Harness) -> None:
    error = h.error("SELECT a.z, b.z FROM Music")
    assert error.message == "Duplicate identifiers in select clause: z"


def test_select_refuses_aliases_and_a_limit_clause(h: Harness) -> None:
    assert h.error("SELECT a AS b FROM Music").message == "Aliasing is not supported"
    assert h.error("SELECT * FROM Music LIMIT 1").message == "Unsupported clause: LIMIT"


def test_select_pages_with_limit_and_next_token(songs: Harness) -> None:
    statement = "SELECT SongTitle FROM Music WHERE Artist = 'A'"
    seen: list[str] = []
    token = None
    for _ in range(10):
        extra: dict[str, Any] = {"Limit": 2}
        if token is not None:
            extra["NextToken"] = token
        answer = songs.run(statement, **extra)
        seen += titles(answer)
        token = answer.get("NextToken")
        if token is None:
            break
    assert seen == [f"t{i}" for i in range(5)]


def test_next_token_of_another_statement_is_refused(songs: Harness) -> None:
    token = songs.run("SELECT * FROM Music WHERE Artist = 'A'", Limit=1)["NextToken"]
    error = songs.error("SELECT * FROM Music WHERE Artist = 'B'", Limit=1, NextToken=token)
    assert error.message == "NextToken does not match request"
    error = songs.error("SELECT * FROM Music WHERE Artist = 'A'", NextToken="!!not-a-token")
    assert error.message == "Invalid NextToken"


def test_select_counts_limit_against_evaluated_items(songs: Harness) -> None:
    answer = songs.run("SELECT * FROM Music WHERE Artist = 'A' AND i = 4", Limit=2)
    assert answer["Items"] == []
    assert "NextToken" in answer


def test_select_from_an_index_queries_the_index() -> None:
    h = Harness()
    h.create(
        "Idx",
        [("pk", "S", "HASH")],
        more_definitions=[{"AttributeName": "g", "AttributeType": "S"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "byG",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    for i in range(4):
        put(h, {"pk": s(f"p{i}"), "g": s("even" if i % 2 == 0 else "odd")}, table="Idx")
    answer = h.run('SELECT pk FROM "Idx"."byG" WHERE g = \'odd\'')
    assert sorted(item["pk"]["S"] for item in answer["Items"]) == ["p1", "p3"]
    error = h.error('SELECT pk FROM "Idx"."byG" WHERE g = \'odd\'', ConsistentRead=True)
    assert error.message == "Strongly consistent read is not supported on Global Secondary Indexes"
    h.loop.close()


def test_select_reports_consumed_capacity(songs: Harness) -> None:
    answer = songs.run("SELECT * FROM Music WHERE Artist = 'A'", ReturnConsumedCapacity="TOTAL")
    assert answer["ConsumedCapacity"]["TableName"] == "Music"
    assert answer["ConsumedCapacity"]["CapacityUnits"] > 0


def test_select_order_by_without_a_partition_key_condition_is_refused(songs: Harness) -> None:
    error = songs.error("SELECT * FROM Music WHERE i = 1 ORDER BY SongTitle")
    assert error.message == (
        "Must have at least one non-optional hash key condition in WHERE clause when using "
        "ORDER BY clause."
    )


# --- Errors common to all statements --------------------------------------------------------


def test_too_few_parameters_are_refused_and_extra_ones_ignored(h: Harness) -> None:
    error = h.error("SELECT * FROM Music WHERE Artist = ? AND SongTitle = ?", s("a"))
    assert error.message == "Number of parameters in request and statement don't match."
    put(h, song("a", "b"))
    answer = h.run("SELECT * FROM Music WHERE Artist = ?", s("a"), s("extra"))
    assert answer["Items"] == [song("a", "b")]


@pytest.mark.parametrize(
    "statement",
    [
        "SELEC * FROM Music",
        "SELECT * FROM",
        "SELECT * FROM Music WHERE",
        "SELECT * FROM Music WHERE Artist = 'A' extra",
        "INSERT INTO Music VALUE {'a': }",
        "UPDATE Music WHERE Artist = 'A'",
        "SELECT * FROM Music WHERE Artist = 'unterminated",
    ],
)
def test_malformed_statements_are_refused(h: Harness, statement: str) -> None:
    error = h.error(statement)
    assert isinstance(error, ValidationException)
    assert error.message.startswith("Statement wasn't well formed, can't be processed: ")


def test_a_missing_table_is_not_found(h: Harness) -> None:
    error = h.error("SELECT * FROM Nope")
    assert isinstance(error, ResourceNotFoundException)
    error = h.error("INSERT INTO Nope VALUE {'a': 1}")
    assert isinstance(error, ResourceNotFoundException)


def test_exists_is_for_transactions_only(h: Harness) -> None:
    error = h.error("EXISTS(SELECT * FROM Music WHERE Artist = 'A')")
    assert error.message == "EXISTS can only be used in ExecuteTransaction write requests."


def test_an_empty_statement_violates_the_length_constraint(h: Harness) -> None:
    error = h.error("")
    assert error.message == (
        "1 validation error detected: Value '' at 'statement' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )


def test_star_with_other_attributes_is_refused(h: Harness) -> None:
    error = h.error("SELECT *, a FROM Music")
    assert (
        error.message
        == "Other attributes should not be present in the projection when '*' is used."
    )


def test_execute_transaction_selects_need_the_full_key(h: Harness) -> None:
    with pytest.raises(ClientError) as caught:
        h("ExecuteTransaction", {"TransactStatements": [{"Statement": "SELECT * FROM Music"}]})
    assert caught.value.type_name == "ValidationException"


# --- BatchExecuteStatement ------------------------------------------------------------------


def batch(h: Harness, *statements: str | dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    entries = [{"Statement": st} if isinstance(st, str) else st for st in statements]
    responses: list[dict[str, Any]] = h("BatchExecuteStatement", {"Statements": entries, **extra})[
        "Responses"
    ]
    return responses


def test_batch_reads_answer_each_item_or_nothing(songs: Harness) -> None:
    responses = batch(
        songs,
        "SELECT SongTitle FROM Music WHERE Artist = 'A' AND SongTitle = 't1'",
        {
            "Statement": "SELECT * FROM Music WHERE Artist = ? AND SongTitle = ?",
            "Parameters": [s("B"), s("none")],
        },
        "SELECT * FROM Music WHERE Artist = 'A' AND SongTitle = 't2' AND i = 9",
    )
    assert responses == [
        {"TableName": "Music", "Item": {"SongTitle": s("t1")}},
        {"TableName": "Music"},
        {"TableName": "Music"},
    ]


def test_batch_read_without_the_whole_key_is_a_statement_error(songs: Harness) -> None:
    responses = batch(songs, "SELECT * FROM Music WHERE Artist = 'A'")
    assert responses == [
        {
            "Error": {
                "Code": "ValidationError",
                "Message": "Select statements within BatchExecuteStatement must specify the "
                "primary key in the where clause.",
            }
        }
    ]


def test_batch_writes_report_each_statement_error(h: Harness) -> None:
    put(h, song("A", "dup"))
    put(h, song("A", "cond", a=n("1")))
    responses = batch(
        h,
        "INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'new'}",
        "INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'dup'}",
        {
            "Statement": "UPDATE Music SET a = 2 WHERE Artist = 'A' AND SongTitle = 'cond' AND a = 5",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
        "DELETE FROM Music WHERE Artist = 'A' AND SongTitle = 'nothing'",
        "UPDATE Music SET a = 1 WHERE Artist = ?",
        "DELETE FROM Nope WHERE k = 1",
    )
    assert responses[0] == {"TableName": "Music"}
    assert responses[1] == {
        "Error": {"Code": "DuplicateItem", "Message": "Duplicate primary key exists in table"}
    }
    assert responses[2] == {
        "Error": {
            "Code": "ConditionalCheckFailed",
            "Message": "The conditional request failed",
            "Item": song("A", "cond", a=n("1")),
        }
    }
    assert responses[3] == {"TableName": "Music"}
    assert responses[4] == {
        "Error": {
            "Code": "ValidationError",
            "Message": "Number of parameters in request and statement don't match.",
        }
    }
    assert responses[5]["Error"]["Code"] == "ResourceNotFound"
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("new")}) == song("A", "new")


def test_batch_of_reads_and_writes_is_refused(h: Harness) -> None:
    with pytest.raises(ValidationException):
        batch(
            h,
            "INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'x'}",
            "SELECT * FROM Music WHERE Artist = 'A' AND SongTitle = 'x'",
        )
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("x")}) is None


def test_batch_of_more_than_25_statements_is_refused(h: Harness) -> None:
    statements = [f"DELETE FROM Music WHERE Artist = 'A' AND SongTitle = '{i}'" for i in range(26)]
    with pytest.raises(ValidationException) as caught:
        batch(h, *statements)
    assert "Member must have length less than or equal to 25" in caught.value.message


def test_batch_reports_consumed_capacity_per_table(h: Harness) -> None:
    answer = h(
        "BatchExecuteStatement",
        {
            "Statements": [
                {"Statement": "INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': '1'}"},
                {"Statement": "INSERT INTO Simple VALUE {'id': 1}"},
                {"Statement": "INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': '2'}"},
            ],
            "ReturnConsumedCapacity": "TOTAL",
        },
    )
    assert answer["ConsumedCapacity"] == [
        {"TableName": "Music", "CapacityUnits": 2.0},
        {"TableName": "Simple", "CapacityUnits": 1.0},
    ]


def test_empty_parameters_violate_the_length_constraint(h: Harness) -> None:
    with pytest.raises(ValidationException) as caught:
        h("ExecuteStatement", {"Statement": "SELECT * FROM Music", "Parameters": []})
    assert caught.value.message == (
        "1 validation error detected: Value '[]' at 'parameters' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )


def test_keywords_are_case_insensitive_and_a_trailing_semicolon_is_accepted(h: Harness) -> None:
    h.run("insert into Music value {'Artist': 'a', 'SongTitle': 'b'};")
    answer = h.run("select * from Music where Artist = 'a' and SongTitle = 'b';")
    assert answer["Items"] == [song("a", "b")]


def test_quoted_identifiers_may_be_reserved_words_or_hold_any_character(h: Harness) -> None:
    put(h, song("A", "T", **{"size": n("3"), "two words": s("x"), 'q"uote': s("y")}))
    answer = h.run(
        'SELECT "size", "two words", "q""uote" FROM Music WHERE "Artist" = \'A\' AND "size" = 3'
    )
    assert answer["Items"] == [{"size": n("3"), "two words": s("x"), 'q"uote': s("y")}]


def test_string_literals_escape_quotes_by_doubling(h: Harness) -> None:
    h.run("INSERT INTO Music VALUE {'Artist': 'it''s', 'SongTitle': 'T'}")
    assert h.get("Music", {"Artist": s("it's"), "SongTitle": s("T")}) == song("it's", "T")


def test_in_list_and_set_values_bind_parameters(songs: Harness) -> None:
    answer = songs.run("SELECT * FROM Music WHERE Artist = 'A' AND i IN [?, ?]", n("1"), n("2"))
    assert titles(answer) == ["t1", "t2"]


def test_update_sets_a_nested_path_and_a_parameter_value(h: Harness) -> None:
    put(h, song("A", "T", info={"M": {"l": {"L": [n("0"), n("1")]}}}))
    h.run(
        "UPDATE Music SET info.l[1] = ?, info.name = 'x' WHERE Artist='A' AND SongTitle='T'", s("v")
    )
    item = h.get("Music", {"Artist": s("A"), "SongTitle": s("T")})
    assert item is not None
    assert item["info"] == {"M": {"l": {"L": [n("0"), s("v")]}, "name": s("x")}}


def test_is_null_and_is_numeric_match_values_of_that_type(h: Harness) -> None:
    put(h, song("A", "null", v={"NULL": True}))
    put(h, song("A", "set", v=n("1")))
    put(h, song("A", "absent"))
    assert titles(h.run("SELECT * FROM Music WHERE v IS NULL")) == ["null"]
    assert titles(h.run("SELECT * FROM Music WHERE v IS NUMERIC")) == ["set"]


def test_missing_compared_with_equals_is_refused(h: Harness) -> None:
    error = h.error("SELECT * FROM Music WHERE v = MISSING")
    assert error.message == "MISSING must be compared using IS operator"


def test_bags_refuse_duplicates_and_parameters(h: Harness) -> None:
    error = h.error("INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'T', 's': <<1, 1.0>>}")
    assert error.message == "Input collection contains duplicates"
    error = h.error("INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'T', 's': <<?>>}", s("x"))
    assert error.message.startswith("Unsupported data type in Bag.")


def test_comments_are_ignored(h: Harness) -> None:
    h.run("INSERT INTO Music /* the table */ VALUE {'Artist': 'A', 'SongTitle': 'T'} -- done")
    assert h.get("Music", {"Artist": s("A"), "SongTitle": s("T")}) == song("A", "T")


def test_bags_of_mixed_types_are_refused(h: Harness) -> None:
    error = h.error("INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'T', 's': <<1, 'a'>>}")
    assert error.message == (
        "Unsupported data type in Bag. DynamoDB only supports either numbers or strings in bags"
    )


def test_next_token_on_a_write_is_refused(h: Harness) -> None:
    error = h.error("DELETE FROM Music WHERE Artist='A' AND SongTitle='T'", NextToken="abc")
    assert error.message == "Invalid NextToken"


@pytest.mark.parametrize(
    "where",
    [
        "Artist IN ['B', 'A']",
        "Artist = 'A' OR Artist = 'B'",
        "(Artist = 'A' OR Artist = 'B') AND i >= 0",
        "Artist IN ['A', 'B', 'C'] AND Artist IN ['A', 'B']",
    ],
)
def test_select_on_several_partition_keys_reads_each_partition(songs: Harness, where: str) -> None:
    answer = songs.run(f"SELECT Artist, SongTitle FROM Music WHERE {where}")
    assert sorted((i["Artist"]["S"], i["SongTitle"]["S"]) for i in answer["Items"]) == [
        (a, f"t{i}") for a in "AB" for i in range(5)
    ]


def test_select_on_several_partitions_pages_across_them(songs: Harness) -> None:
    statement = (
        "SELECT Artist, SongTitle FROM Music WHERE Artist IN ['B', 'A'] ORDER BY Artist DESC"
    )
    seen: list[tuple[str, str]] = []
    extra: dict[str, Any] = {"Limit": 3}
    for _ in range(10):
        answer = songs.run(statement, **extra)
        assert len(answer["Items"]) <= 3
        seen += [(i["Artist"]["S"], i["SongTitle"]["S"]) for i in answer["Items"]]
        if "NextToken" not in answer:
            break
        extra["NextToken"] = answer["NextToken"]
    assert seen == [("B", f"t{i}") for i in range(5)] + [("A", f"t{i}") for i in range(5)]


def test_order_by_over_several_partitions_must_name_the_partition_key(songs: Harness) -> None:
    error = songs.error("SELECT * FROM Music WHERE Artist IN ['A', 'B'] ORDER BY SongTitle")
    assert error.message == (
        "Must have hash key in ORDER BY clause when more than one hash key condition specified "
        "in WHERE clause."
    )


def test_select_on_several_partitions_sums_consumed_capacity(songs: Harness) -> None:
    one = songs.run("SELECT * FROM Music WHERE Artist = 'A'", ReturnConsumedCapacity="TOTAL")
    both = songs.run(
        "SELECT * FROM Music WHERE Artist IN ['A', 'B']", ReturnConsumedCapacity="TOTAL"
    )
    assert both["ConsumedCapacity"]["CapacityUnits"] == 2 * one["ConsumedCapacity"]["CapacityUnits"]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM Music WHERE Artist = 1",
        "SELECT * FROM Music WHERE Artist IN ['A', 2]",
        "UPDATE Music SET a = 1 WHERE Artist = 1 AND SongTitle = 'T'",
        "DELETE FROM Music WHERE Artist = 'A' AND SongTitle = 2",
        "INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 2}",
    ],
)
def test_key_values_of_another_type_than_the_schema_are_refused(h: Harness, statement: str) -> None:
    error = h.error(statement)
    assert isinstance(error, ValidationException)
    assert error.message.startswith(
        "Key attribute's data type should match its data type in table's schema: Key "
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE Music.idx SET a = 1 WHERE Artist = 'A' AND SongTitle = 'T'",
        "DELETE FROM \"Music\".\"idx\" WHERE Artist = 'A' AND SongTitle = 'T'",
        "INSERT INTO Music.idx VALUE {'Artist': 'A', 'SongTitle': 'T'}",
    ],
)
def test_writes_to_an_index_are_refused(h: Harness, statement: str) -> None:
    error = h.error(statement)
    assert error.message == (
        "FROM clause may only contain a single table name in data manipulation statements"
    )


def test_batch_statement_members_are_named_by_their_place(h: Harness) -> None:
    with pytest.raises(ValidationException) as caught:
        h(
            "BatchExecuteStatement",
            {"Statements": [{"Statement": "SELECT * FROM Music"}, {"Parameters": [s("a")]}]},
        )
    assert caught.value.message == (
        "1 validation error detected: Value null at 'statements.2.member.statement' failed to "
        "satisfy constraint: Member must not be null"
    )


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("i + 1 = 2", "Unsupported operator in Condition Expression. Operator: +"),
        (
            "list_append(i, [1]) = i",
            "Unsupported operator in Condition Expression. Operator: list_append",
        ),
        ("nope(i) = 1", "Unrecognized function: nope"),
    ],
)
def test_conditions_refuse_arithmetic_and_update_functions(
    h: Harness, where: str, message: str
) -> None:
    assert h.error(f"SELECT * FROM Music WHERE {where}").message == message
