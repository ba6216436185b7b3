"""ExecuteTransaction: PartiQL statements run as one transaction over an in-memory store."""

from __future__ import annotations

from typing import Any

from keeldb.model.errors import TransactionCanceledException, ValidationException


def test_writes_and_exists_commit_together_or_not_at_all(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    h.put("ttt", "a", n=1)
    h.put("ttt", "c", n=1)
    h(
        "ExecuteTransaction",
        {
            "TransactStatements": [
                {"Statement": "EXISTS(SELECT * FROM ttt WHERE pk = 'c' AND n = 1)"},
                {
                    "Statement": "INSERT INTO ttt VALUE {'pk': ?, 'n': 5}",
                    "Parameters": [{"S": "b"}],
                },
                {"Statement": "UPDATE ttt SET n = n + 1 WHERE pk = 'a'"},
            ]
        },
    )
    assert h.get("ttt", "a")["n"] == {"N": "2"}
    assert h.get("ttt", "b")["n"] == {"N": "5"}
    error = h.error(
        "ExecuteTransaction",
        {
            "TransactStatements": [
                {"Statement": "INSERT INTO ttt VALUE {'pk': 'b'}"},
                {"Statement": "DELETE FROM ttt WHERE pk = 'a'"},
            ]
        },
    )
    assert isinstance(error, TransactionCanceledException)
    assert [r["Code"] for r in error.reasons] == ["DuplicateItem", "None"]
    assert error.message.endswith("[DuplicateItem, None]")


def test_selects_read_as_one_transaction(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    h.put("ttt", "a", n=1)
    answer = h(
        "ExecuteTransaction",
        {
            "TransactStatements": [
                {"Statement": "SELECT n FROM ttt WHERE pk = 'a'"},
                {"Statement": "SELECT * FROM ttt WHERE pk = 'zz'"},
            ]
        },
    )
    assert answer["Responses"] == [{"Item": {"n": {"N": "1"}}}, {}]


def test_reads_and_writes_do_not_mix(make_harness: Any) -> None:
    h = make_harness()
    h.create("ttt")
    error = h.error(
        "ExecuteTransaction",
        {
            "TransactStatements": [
                {"Statement": "SELECT * FROM ttt WHERE pk = 'a'"},
                {"Statement": "DELETE FROM ttt WHERE pk = 'a'"},
            ]
        },
    )
    assert isinstance(error, ValidationException)
    error = h.error("ExecuteTransaction", {"TransactStatements": []})
    assert error.message == (
        "1 validation error detected: Value '[]' at 'transactStatements' failed to satisfy "
        "constraint: Member must have length greater than or equal to 1"
    )
