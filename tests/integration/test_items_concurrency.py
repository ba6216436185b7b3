"""Concurrent writers against the real server: conditional writes to one item are decided
one at a time in log order, so counters never lose an increment and exactly one of several
racing creates wins."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

WRITERS = 6
INCREMENTS_PER_WRITER = 20
# Every future is waited for with this bound, so a hang fails the test instead of the run.
RESULT_SECONDS_MAX = 60.0
# An editor that loses this many races in a row means writes are not being decided in order.
EDIT_ATTEMPTS_MAX = 500


def _run_all(tasks: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [future.result(timeout=RESULT_SECONDS_MAX) for future in futures]


def test_concurrent_increments_are_all_counted(
    endpoint: str, client_factory: Callable[..., Any], table_factory: Callable[..., str]
) -> None:
    table = table_factory()
    clients = [client_factory(endpoint) for _ in range(WRITERS)]

    def writer(client: Any) -> Callable[[], int]:
        def run() -> int:
            for _ in range(INCREMENTS_PER_WRITER):
                client.update_item(
                    TableName=table,
                    Key={"pk": {"S": "counter"}},
                    UpdateExpression="ADD n :one",
                    ExpressionAttributeValues={":one": {"N": "1"}},
                )
            return INCREMENTS_PER_WRITER

        return run

    done = sum(_run_all([writer(c) for c in clients]))
    item = clients[0].get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)
    assert item["Item"]["n"] == {"N": str(done)}


def test_exactly_one_of_racing_conditional_creates_wins(
    endpoint: str, client_factory: Callable[..., Any], table_factory: Callable[..., str]
) -> None:
    table = table_factory()
    clients = [client_factory(endpoint) for _ in range(WRITERS)]

    def creator(client: Any, number: int) -> Callable[[], str]:
        def run() -> str:
            try:
                client.put_item(
                    TableName=table,
                    Item={"pk": {"S": "only-one"}, "by": {"N": str(number)}},
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except ClientError as error:
                code: str = error.response["Error"]["Code"]
                return code
            return "won"

        return run

    outcomes = _run_all([creator(c, i) for i, c in enumerate(clients)])
    assert outcomes.count("won") == 1
    assert outcomes.count("ConditionalCheckFailedException") == WRITERS - 1
    winner = outcomes.index("won")
    item = clients[0].get_item(TableName=table, Key={"pk": {"S": "only-one"}}, ConsistentRead=True)
    assert item["Item"]["by"] == {"N": str(winner)}


def test_optimistic_locking_with_a_version_attribute_never_loses_an_update(
    endpoint: str, client_factory: Callable[..., Any], table_factory: Callable[..., str]
) -> None:
    table = table_factory()
    clients = [client_factory(endpoint) for _ in range(WRITERS)]
    clients[0].put_item(
        TableName=table, Item={"pk": {"S": "doc"}, "v": {"N": "0"}, "log": {"L": []}}
    )

    def editor(client: Any, number: int) -> Callable[[], int]:
        def run() -> int:
            conflicts = 0
            for _ in range(EDIT_ATTEMPTS_MAX):
                current = client.get_item(
                    TableName=table, Key={"pk": {"S": "doc"}}, ConsistentRead=True
                )["Item"]
                version = current["v"]["N"]
                try:
                    client.update_item(
                        TableName=table,
                        Key={"pk": {"S": "doc"}},
                        UpdateExpression="SET v = v + :one, #log = list_append(#log, :me)",
                        ConditionExpression="v = :seen",
                        ExpressionAttributeNames={"#log": "log"},
                        ExpressionAttributeValues={
                            ":one": {"N": "1"},
                            ":me": {"L": [{"N": str(number)}]},
                            ":seen": {"N": version},
                        },
                    )
                    return conflicts
                except ClientError as error:
                    assert error.response["Error"]["Code"] == "ConditionalCheckFailedException"
                    conflicts += 1
            raise AssertionError(f"no edit went through in {EDIT_ATTEMPTS_MAX} attempts")

        return run

    _run_all([editor(c, i) for i, c in enumerate(clients)])
    final = clients[0].get_item(TableName=table, Key={"pk": {"S": "doc"}}, ConsistentRead=True)
    assert final["Item"]["v"] == {"N": str(WRITERS)}
    assert sorted(int(x["N"]) for x in final["Item"]["log"]["L"]) == list(range(WRITERS))
