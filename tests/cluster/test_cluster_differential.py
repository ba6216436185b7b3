"""A single node and a 3-node cluster given the same stream of requests answer alike.

A seeded generator makes a few thousand requests on two tables. On one, with a global
secondary index: PutItem, UpdateItem, DeleteItem, GetItem, BatchGetItem, BatchWriteItem,
TransactWriteItems, TransactGetItems, Query (on the table and the index), Scan (with Limit,
and segments of parallel scans) and PartiQL statements (ExecuteStatement,
BatchExecuteStatement). On the other, with a sort key and a local index: writes, and Query
pages in either direction. Condition, update, filter and projection expressions are put
together from fragments, many of them wrong on purpose (paths that overlap, operands of the
wrong type, placeholders that are missing or unused, keys updated). Each request goes, as
raw signed HTTP, to a single node and to a cluster's router on node 2 (which leads some
partitions and forwards the rest); the two answers must be the same: status, error type,
message and body, all but ConsumedCapacity (and a batch read's order). Reads are eventually
consistent as often as not: a router reads its own writes. Streams with every read strongly
consistent go through all routers in turn, of a `standard` cluster and of an `aurora` one
whose log replicas leave half its routers without a full replica; the same stream against
routers broken on purpose to read their own stale replicas must differ. Both tables have a
stream: after each run the two streams must hold the same changes of every item, in order.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from keeldb.cluster import cli as cluster_cli

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(300)]

REQUESTS = 2000
SEEDS = (20261129, 7)
STRONG_SEED = 11
TABLE = "differential"
INDEX = "by-colour"
STREAM = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
STREAMS_TARGET = "DynamoDBStreams_20120810"
HISTORY_SECONDS_MAX = 10.0
SORTED = "differential-sorted"  # a partition key and a sort key, and a local index
LOCAL_INDEX = "by-size"
START_SECONDS_MAX = 60.0
HTTP_SECONDS = 15.0
_CREDENTIALS = Credentials("AKIDCLUSTERTEST", "cluster-test-secret")

# --- the requests ------------------------------------------------------------------------

_PATHS = ("a", "b", "#n", "#m", "b.c", "b[0]", "#n.#m", "l[1].x", "m.#n[2]", "colour", "size")
_VALUES = (":v", ":w", ":n", ":l", ":m", ":s")
_CONDITIONS = (
    "attribute_exists({p})",
    "attribute_not_exists({p})",
    "attribute_type({p}, {v})",
    "begins_with({p}, {v})",
    "contains({p}, {v})",
    "size({p}) > {v}",
    "{p} = {v}",
    "{p} <> {v}",
    "{p} < {v}",
    "{p} BETWEEN {v} AND {v}",
    "{p} IN ({v}, {v})",
    "NOT {c}",
    "({c}) AND ({c})",
    "{c} OR {c}",
)
_SIMPLE_CONDITIONS = 11  # the first ones: no nested condition


class Requests:
    """A deterministic stream of DynamoDB item requests (operation, body) from a seed."""

    def __init__(self, seed: int, *, strong: bool = False) -> None:
        """With `strong`, every read is strongly consistent and none reads an index (whose
        reads are eventually consistent): its answers then do not depend on which router
        it goes through."""
        self._random = random.Random(seed)
        self._strong = strong

    def _path(self) -> str:
        return self._random.choice(_PATHS)

    def _value(self) -> str:
        return self._random.choice(_VALUES)

    def _condition(self, depth: int = 0) -> str:
        choices = _CONDITIONS if depth < 2 else _CONDITIONS[:_SIMPLE_CONDITIONS]
        form = self._random.choice(choices)
        nested = self._condition(depth + 1) if "{c}" in form else ""
        return form.format(p=self._path(), v=self._value(), c=nested)

    def _update(self) -> str:
        clauses = []
        for keyword in self._random.sample(
            ["SET", "REMOVE", "ADD", "DELETE"], self._random.randint(1, 3)
        ):
            actions = []
            for _ in range(self._random.randint(1, 3)):
                p, q, v = self._path(), self._path(), self._value()
                if keyword == "SET":
                    actions.append(
                        self._random.choice(
                            [
                                f"{p} = {v}",
                                f"{p} = {q} + {v}",
                                f"{p} = if_not_exists({q}, {v})",
                                f"{p} = list_append({q}, {v})",
                                f"{p} = {v} - {q}",
                            ]
                        )
                    )
                elif keyword == "REMOVE":
                    actions.append(p)
                else:
                    actions.append(f"{p} {v}")
            clauses.append(keyword + " " + ", ".join(actions))
        text = " ".join(clauses)
        if self._random.random() < 0.05:
            text = text[: self._random.randint(0, len(text))]  # cut short: a syntax error
        return text

    def _attribute(self, depth: int = 0) -> dict[str, Any]:
        kind = self._random.choice(["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"])
        r = self._random
        if kind == "S":
            value: Any = r.choice(["x", "", "red", "blue", "a" * 500])
        elif kind == "N":
            value = r.choice(["1", "-2.5", "1e125", "99999999999999999999999999999999999999", "0"])
        elif kind == "B":
            value = r.choice(["YQ==", ""])
        elif kind == "BOOL":
            value = r.choice([True, False])
        elif kind == "NULL":
            value = True
        elif kind == "M":
            value = {"x": self._attribute(depth + 1)} if depth < 3 else {}
        elif kind == "L":
            value = (
                [self._attribute(depth + 1) for _ in range(r.randint(0, 2))] if depth < 3 else []
            )
        elif kind == "SS":
            value = r.choice([["a", "b"], ["a", "a"], []])
        elif kind == "NS":
            value = r.choice([["1", "2"], ["1", "1.0"]])
        else:
            value = r.choice([["YQ=="], ["YQ==", "Yg=="]])
        return {kind: value}

    def _key(self) -> dict[str, Any]:
        return {
            "a": self._random.choice(
                [{"S": f"k{self._random.randint(0, 7)}"}, {"S": "k1"}, {"S": ""}, {"N": "1"}]
            )
        }

    def _item(self) -> dict[str, Any]:
        item = self._key()
        for _ in range(self._random.randint(0, 3)):
            item[self._random.choice(["b", "l", "m", "size"])] = self._attribute()
        if self._random.random() < 0.6:
            item["colour"] = {"S": self._random.choice(["red", "blue", "green"])}
        return item

    def _placeholders(self, request: dict[str, Any]) -> None:
        """The names and values the request's expressions use (now and then one too many)."""
        text = " ".join(
            str(request.get(member, ""))
            for member in (
                "UpdateExpression",
                "ConditionExpression",
                "KeyConditionExpression",
                "FilterExpression",
                "ProjectionExpression",
            )
        )
        names = set(re.findall(r"#[a-z]+", text))
        values = set(re.findall(r":[a-z]+", text))
        if self._random.random() < 0.05:
            names.add("#unused")
        if self._random.random() < 0.05:
            values.add(":unused")
        if names:
            request["ExpressionAttributeNames"] = {
                name: self._random.choice(["n", "m", "a", "b", "colour"]) for name in sorted(names)
            }
        if values:
            request["ExpressionAttributeValues"] = {
                value: self._attribute() for value in sorted(values)
            }

    def _read_mode(self, request: dict[str, Any]) -> None:
        choice = self._random.choice([None, True, False])
        if self._strong:
            request["ConsistentRead"] = True
        elif choice is not None:
            request["ConsistentRead"] = choice

    def _on_index(self) -> bool:
        chosen = self._random.random() < 0.3
        return chosen and not self._strong

    def _sorted_key(self) -> dict[str, Any]:
        r = self._random
        key = {"pk": {"S": f"p{r.randint(0, 3)}"}, "sk": {"N": str(r.randint(0, 5))}}
        if r.random() < 0.05:
            del key["sk"]
        return key

    def _sorted(self) -> tuple[str, dict[str, Any]]:
        """A request on the table with a sort key: writes, and Query pages of one item
        collection in either direction, on the table or its local index."""
        r = self._random
        op = r.choice(["PutItem", "UpdateItem", "DeleteItem", "Query", "Query", "Query"])
        body: dict[str, Any] = {"TableName": SORTED}
        if op == "PutItem":
            item = self._sorted_key()
            if r.random() < 0.7:
                item["size"] = r.choice([{"N": str(r.randint(0, 9))}, self._attribute()])
            if r.random() < 0.5:
                item["b"] = self._attribute()
            body["Item"] = item
        elif op == "UpdateItem":
            body["Key"] = self._sorted_key()
            body["UpdateExpression"] = r.choice(
                ["SET size = :v", "ADD size :v", "SET b = :w", "REMOVE size"]
            )
            if r.random() < 0.3:
                body["ConditionExpression"] = self._condition()
            body["ReturnValues"] = r.choice(["NONE", "ALL_NEW"])
        elif op == "DeleteItem":
            body["Key"] = self._sorted_key()
        else:
            on_index = r.random() < 0.3
            if on_index:
                body["IndexName"] = LOCAL_INDEX
                sort = "size"
            else:
                sort = "sk"
            body["KeyConditionExpression"] = r.choice(
                ["pk = :v", f"pk = :v AND {sort} > :w", f"pk = :v AND {sort} BETWEEN :w AND :n"]
            )
            body["ScanIndexForward"] = r.choice([True, False])
            if r.random() < 0.6:
                body["Limit"] = r.randint(1, 4)
            if r.random() < 0.2:
                start = self._sorted_key()
                if on_index:
                    start["size"] = {"N": str(r.randint(0, 9))}
                body["ExclusiveStartKey"] = start
            if r.random() < 0.2:
                body["Select"] = "COUNT"
            if r.random() < 0.3:
                body["FilterExpression"] = self._condition()
            self._read_mode(body)
        self._placeholders(body)
        values = body.get("ExpressionAttributeValues", {})
        if op == "Query" and ":v" in values:
            values[":v"] = {"S": f"p{r.randint(0, 3)}"}
            for name in (":w", ":n"):
                if name in values and r.random() < 0.8:
                    values[name] = {"N": str(r.randint(0, 9))}
        return op, body

    def _other(self) -> tuple[str, dict[str, Any]]:
        """TransactGetItems, a segment of a parallel Scan, and PartiQL statements."""
        r = self._random
        op = r.choice(
            [
                "TransactGetItems",
                "ScanSeg",
                "ExecuteStatement",
                "ExecuteStatement",
                "BatchExecuteStatement",
            ]
        )
        if op == "TransactGetItems":
            gets = []
            for _ in range(r.randint(1, 4)):
                g = {"TableName": TABLE, "Key": self._key()}
                if r.random() < 0.3:
                    g["ProjectionExpression"] = "a, colour"
                gets.append({"Get": g})
            return op, {"TransactItems": gets}
        if op == "ScanSeg":
            total = r.choice([1, 2, 3, 4, 7])
            body = {"TableName": TABLE, "Segment": r.randint(0, total), "TotalSegments": total}
            if r.random() < 0.5:
                body["Limit"] = r.randint(1, 5)
            self._read_mode(body)
            return "Scan", body

        def stmt():
            k = f"k{r.randint(0, 7)}"
            return r.choice(
                [
                    (f'SELECT * FROM "{TABLE}" WHERE a = ?', [{"S": k}]),
                    (f"SELECT a, colour FROM \"{TABLE}\" WHERE a = '{k}'", []),
                    (f'SELECT * FROM "{TABLE}"', []),
                    (f"INSERT INTO \"{TABLE}\" VALUE {{'a': ?, 'colour': 'red'}}", [{"S": k}]),
                    (f'UPDATE "{TABLE}" SET size = ? WHERE a = ?', [{"N": "3"}, {"S": k}]),
                    (f"UPDATE \"{TABLE}\" SET size = size + 1 WHERE a = '{k}'", []),
                    (f'DELETE FROM "{TABLE}" WHERE a = ?', [{"S": k}]),
                    (f'SELECT * FROM "{TABLE}"."{INDEX}" WHERE colour = \'red\'', []),
                    (f"SELECT * FROM \"{SORTED}\" WHERE pk = 'p1' AND sk > 2", []),
                ]
            )

        if op == "ExecuteStatement":
            text, params = stmt()
            body = {"Statement": text}
            if params:
                body["Parameters"] = params
            if r.random() < 0.3:
                body["Limit"] = r.randint(1, 3)
            self._read_mode(body)
            return op, body
        items = []
        for _ in range(r.randint(1, 3)):
            text, params = stmt()
            e = {"Statement": text}
            if params:
                e["Parameters"] = params
            self._read_mode(e)
            items.append(e)
        return op, {"Statements": items}

    def next(self) -> tuple[str, dict[str, Any]]:
        r = self._random
        if r.random() < 0.2:
            return self._other()
        if r.random() < 0.3:
            return self._sorted()
        op = r.choice(
            ["PutItem", "UpdateItem", "UpdateItem", "DeleteItem", "GetItem", "BatchGetItem"]
            + ["BatchWriteItem", "TransactWriteItems", "Query", "Query", "Scan"]
        )
        body: dict[str, Any] = {"TableName": TABLE}
        if op == "PutItem":
            body["Item"] = self._item()
            if r.random() < 0.4:
                body["ConditionExpression"] = self._condition()
            body["ReturnValues"] = r.choice(["NONE", "ALL_OLD"])
        elif op == "UpdateItem":
            body["Key"] = self._key()
            body["UpdateExpression"] = self._update()
            if r.random() < 0.3:
                body["ConditionExpression"] = self._condition()
            body["ReturnValues"] = r.choice(
                ["NONE", "ALL_OLD", "ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"]
            )
        elif op == "DeleteItem":
            body["Key"] = self._key()
            if r.random() < 0.5:
                body["ConditionExpression"] = self._condition()
            body["ReturnValues"] = r.choice(["NONE", "ALL_OLD"])
        elif op == "GetItem":
            body["Key"] = self._key()
            if r.random() < 0.4:
                body["ProjectionExpression"] = ", ".join(
                    self._path() for _ in range(r.randint(1, 3))
                )
            self._read_mode(body)
        elif op == "Query":
            if self._on_index():
                body["IndexName"] = INDEX
                body["KeyConditionExpression"] = r.choice(["colour = :v", "#n = :v"])
            else:
                body["KeyConditionExpression"] = r.choice(
                    ["a = :v", "#n = :v", "a = :v AND b > :w", "begins_with(a, :v)"]
                )
                self._read_mode(body)
            if r.random() < 0.4:
                body["FilterExpression"] = self._condition()
            if r.random() < 0.3:
                body["Limit"] = r.choice([1, 2, 5])
        elif op == "Scan":
            if r.random() < 0.4:
                body["FilterExpression"] = self._condition()
            if self._on_index():
                body["IndexName"] = INDEX
            else:
                self._read_mode(body)
            body["Limit"] = r.choice([1, 3, 100])
        elif op == "BatchGetItem":
            keys = [self._key() for _ in range(r.randint(1, 4))]
            del body["TableName"]
            body["RequestItems"] = {TABLE: {"Keys": keys}}
            self._read_mode(body["RequestItems"][TABLE])
            return op, body
        elif op == "BatchWriteItem":
            del body["TableName"]
            body["RequestItems"] = {
                TABLE: [
                    r.choice(
                        [
                            {"PutRequest": {"Item": self._item()}},
                            {"DeleteRequest": {"Key": self._key()}},
                        ]
                    )
                    for _ in range(r.randint(1, 4))
                ]
            }
            return op, body
        else:  # TransactWriteItems
            del body["TableName"]
            actions = []
            for _ in range(r.randint(1, 3)):
                kind = r.choice(["Put", "Update", "Delete", "ConditionCheck"])
                action: dict[str, Any] = {"TableName": TABLE}
                if kind == "Put":
                    action["Item"] = self._item()
                else:
                    action["Key"] = self._key()
                if kind == "Update":
                    action["UpdateExpression"] = self._update()
                if kind == "ConditionCheck" or r.random() < 0.4:
                    action["ConditionExpression"] = self._condition()
                self._placeholders(action)
                actions.append({kind: action})
            body["TransactItems"] = actions
            return op, body
        self._placeholders(body)
        return op, body


# --- the two servers ---------------------------------------------------------------------


class Endpoint:
    """Raw signed DynamoDB requests on one keep-alive connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        self._connection = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=HTTP_SECONDS
        )

    def call(
        self, op: str, body: dict[str, Any], target: str = "DynamoDB_20120810"
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode()
        request = AWSRequest(
            method="POST",
            url=self.url + "/",
            data=data,
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"{target}.{op}",
            },
        )
        SigV4Auth(_CREDENTIALS, "dynamodb", "us-east-1").add_auth(request)
        self._connection.request("POST", "/", body=data, headers=dict(request.headers))
        response = self._connection.getresponse()
        answer = json.loads(response.read() or b"{}")
        return response.status, answer

    def close(self) -> None:
        self._connection.close()


def _comparable(op: str, status: int, answer: dict[str, Any]) -> dict[str, Any]:
    """What must match: everything but the capacity units (metered per partition), with a
    batch read's items in one order."""
    kept = {key: value for key, value in answer.items() if key != "ConsumedCapacity"}
    if op == "BatchGetItem" and isinstance(kept.get("Responses"), dict):
        # DynamoDB returns a batch's items in no particular order.
        kept["Responses"] = {
            table: sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
            for table, items in kept["Responses"].items()
        }
    if "__type" in kept:
        kept["__type"] = kept["__type"].rsplit("#", 1)[-1]
    return {"status": status, **kept}


def first_difference(
    ours: list[dict[str, Any]], theirs: list[dict[str, Any]]
) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a != b:
            return index, a, b
    return None


def _create_tables(endpoint: Endpoint) -> None:
    _create_table(endpoint)
    status, answer = endpoint.call(
        "CreateTable",
        {
            "TableName": SORTED,
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "N"},
                {"AttributeName": "size", "AttributeType": "N"},
            ],
            "LocalSecondaryIndexes": [
                {
                    "IndexName": LOCAL_INDEX,
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "size", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": STREAM,
        },
    )
    assert status == 200, answer
    _wait_active(endpoint, SORTED)


def _wait_active(endpoint: Endpoint, name: str) -> None:
    deadline = time.monotonic() + START_SECONDS_MAX
    while time.monotonic() < deadline:
        _, answer = endpoint.call("DescribeTable", {"TableName": name})
        table = answer.get("Table", {})
        indexes = table.get("GlobalSecondaryIndexes", [])
        if table.get("TableStatus") == "ACTIVE" and all(
            i["IndexStatus"] == "ACTIVE" for i in indexes
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{name} not active on {endpoint.url}")


def _create_table(endpoint: Endpoint) -> None:
    status, answer = endpoint.call(
        "CreateTable",
        {
            "TableName": TABLE,
            "KeySchema": [{"AttributeName": "a", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                {"AttributeName": "a", "AttributeType": "S"},
                {"AttributeName": "colour", "AttributeType": "S"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": INDEX,
                    "KeySchema": [{"AttributeName": "colour", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": STREAM,
        },
    )
    assert status == 200, answer
    _wait_active(endpoint, TABLE)


@pytest.fixture
def single_node(tmp_path: Path) -> Any:
    (port,) = cluster_cli._free_ports("127.0.0.1", 1)
    log = (tmp_path / "single.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "keeldb", "serve", "--host", "127.0.0.1", "--port", str(port)]
        + ["--data-dir", str(tmp_path / "single")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS_MAX
        while True:
            try:
                endpoint = Endpoint(url)
                endpoint.call("ListTables", {})
                endpoint.close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _explain(
    seed: int, found: tuple[int, dict[str, Any], dict[str, Any]] | None, *, strong: bool
) -> str:
    assert found is not None
    index, single, cluster = found
    requests = Requests(seed, strong=strong)
    for _ in range(index + 1):
        op, body = requests.next()
    return (
        f"request {index} of seed {seed}: {op} {json.dumps(body)}\n"
        f"single node: {json.dumps(single, sort_keys=True)}\n"
        f"cluster:     {json.dumps(cluster, sort_keys=True)}"
    )


def _answers(endpoints: list[Endpoint], seed: int, *, strong: bool = False) -> list[dict[str, Any]]:
    """The answers to the seed's stream, request i sent to endpoints[i % len(endpoints)]."""
    requests = Requests(seed, strong=strong)
    answers = []
    for index in range(REQUESTS):
        op, body = requests.next()
        status, answer = endpoints[index % len(endpoints)].call(op, body)
        answers.append({"op": op, **_comparable(op, status, answer)})
    return answers


def _histories(endpoint: Endpoint, table: str) -> dict[str, list[Any]]:
    """Every stream record of `table`, per item (its keys), in stream order: the event, the
    keys and both images. (Records of different items are in no order across shards.)"""
    _, described = endpoint.call("DescribeTable", {"TableName": table})
    arn = described["Table"]["LatestStreamArn"]
    shards: list[dict[str, Any]] = []
    start: str | None = None
    while True:
        request = {"StreamArn": arn, **({"ExclusiveStartShardId": start} if start else {})}
        status, answer = endpoint.call("DescribeStream", request, STREAMS_TARGET)
        assert status == 200, answer
        shards += answer["StreamDescription"]["Shards"]
        start = answer["StreamDescription"].get("LastEvaluatedShardId")
        if start is None:
            break
    histories: dict[str, list[Any]] = {}
    for shard in shards:
        status, answer = endpoint.call(
            "GetShardIterator",
            {"StreamArn": arn, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"},
            STREAMS_TARGET,
        )
        assert status == 200, answer
        iterator = answer.get("ShardIterator")
        while iterator is not None:
            status, page = endpoint.call(
                "GetRecords", {"ShardIterator": iterator, "Limit": 1000}, STREAMS_TARGET
            )
            assert status == 200, page
            for record in page["Records"]:
                change = record["dynamodb"]
                histories.setdefault(json.dumps(change["Keys"], sort_keys=True), []).append(
                    [record["eventName"], change.get("NewImage"), change.get("OldImage")]
                )
            iterator = page.get("NextShardIterator") if page["Records"] else None
    return histories


def _same_histories(single: Endpoint, cluster: Endpoint) -> None:
    """The two streams hold the same changes of each item, in the same order (the cluster's
    partitions may show their last records a moment later)."""
    for table in (TABLE, SORTED):
        expected = _histories(single, table)
        assert sum(map(len, expected.values())) >= 20, expected  # the stream wrote items
        deadline = time.monotonic() + HISTORY_SECONDS_MAX
        while (got := _histories(cluster, table)) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        for key in sorted(set(expected) | set(got)):
            assert got.get(key) == expected.get(key), (table, key)


def _run_both(
    single_url: str,
    cluster: Any,
    routers: list[int],
    seed: int,
    *,
    strong: bool,
    streams: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The answers of the single node and of the cluster's routers to the seed's stream;
    with `streams`, their DynamoDB Streams must then hold the same changes of each item."""
    single = Endpoint(single_url)
    endpoints = [Endpoint(cluster.endpoint(node)) for node in routers]
    try:
        _create_tables(single)
        _create_tables(endpoints[0])
        for endpoint in endpoints[1:]:
            _wait_served(endpoint)
        expected = _answers([single], seed, strong=strong)
        got = _answers(endpoints, seed, strong=strong)
        if streams and first_difference(expected, got) is None:
            _same_histories(single, endpoints[-1])
    finally:
        single.close()
        for endpoint in endpoints:
            endpoint.close()
    return expected, got


def _wait_served(endpoint: Endpoint) -> None:
    """Until this router serves the table (its catalog may learn of it a little later)."""
    deadline = time.monotonic() + START_SECONDS_MAX
    for name, key in ((TABLE, {"a": {"S": "k0"}}), (SORTED, {"pk": {"S": "p0"}, "sk": {"N": "0"}})):
        while True:
            status, _ = endpoint.call("GetItem", {"TableName": name, "Key": key})
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not served by {endpoint.url}")
            time.sleep(0.1)


def _reaches_far(expected: list[dict[str, Any]]) -> None:
    """The stream reaches far: successes, client errors, failed conditions and transactions."""
    assert all(answer["status"] < 500 for answer in expected), "the single node failed a request"
    kinds = {(answer["status"], answer.get("__type")) for answer in expected}
    assert (200, None) in kinds
    assert (400, "ValidationException") in kinds
    assert (400, "ConditionalCheckFailedException") in kinds
    assert (400, "TransactionCanceledException") in kinds
    assert sum(1 for answer in expected if answer["status"] == 200) >= REQUESTS // 10


STANDARD = {"nodes": 3, "profile": "standard", "partitions": 4}
# Six nodes, two per zone; nodes 4-6 hold only log replicas (docs/cluster.md, "Aurora log
# replicas"), so their routers have no full replica to read from.
AURORA_LOG_REPLICAS = {
    "nodes": 6,
    "profile": "aurora",
    "partitions": 3,
    "extra": {"log_replicas": True},
}
# (the cluster, the routers its share of the stream goes through in turn, seed, strong)
STREAMS = [
    *((STANDARD, [2], seed, False) for seed in SEEDS),
    (STANDARD, [1, 2, 3], STRONG_SEED, True),
    (AURORA_LOG_REPLICAS, [1, 2, 3, 4, 5, 6], STRONG_SEED, True),
]


@pytest.mark.parametrize(
    ("shape", "routers", "seed", "strong"),
    STREAMS,
    ids=[f"{shape['profile']}-routers{''.join(map(str, r))}-seed{s}" for shape, r, s, _ in STREAMS],
)
def test_a_cluster_answers_a_stream_of_requests_as_a_single_node_does(
    cluster_factory: Any,
    single_node: str,
    shape: dict[str, Any],
    routers: list[int],
    seed: int,
    strong: bool,
) -> None:
    cluster = cluster_factory(**shape)
    expected, got = _run_both(single_node, cluster, routers, seed, strong=strong)
    _reaches_far(expected)
    found = first_difference(expected, got)
    assert found is None, _explain(seed, found, strong=strong)


def test_the_comparison_catches_a_cluster_that_reads_stale_data(
    cluster_factory: Any, single_node: str
) -> None:
    """The broken variant: routers serve every read, strongly consistent ones included,
    from their own replica however far behind it is (`router.BUGGIFY_STALE_READS`). Writes
    through one router and reads through the next then differ from the single node's."""
    cluster = cluster_factory(
        nodes=3, profile="standard", partitions=4, env={"KEELDB_BUGGIFY_STALE_READS": "1"}
    )
    expected, got = _run_both(
        single_node, cluster, [1, 2, 3], STRONG_SEED, strong=True, streams=False
    )
    found = first_difference(expected, got)
    assert found is not None
    index, _, _ = found
    assert expected[index]["op"] in {"GetItem", "BatchGetItem", "Query", "Scan"}, _explain(
        STRONG_SEED, found, strong=True
    )


def test_the_comparison_finds_a_changed_answer() -> None:
    answers = [
        {"op": "GetItem", "status": 200, "Item": {"a": {"S": "k1"}}},
        {"op": "Scan", "status": 200, "Count": 2},
    ]
    changed = json.loads(json.dumps(answers))
    changed[1]["Count"] = 1
    assert first_difference(answers, changed) == (1, answers[1], changed[1])
    assert first_difference(answers, json.loads(json.dumps(answers))) is None
    # A batch read's items are compared in one order.
    one = {"Responses": {"t": [{"a": {"S": "1"}}, {"a": {"S": "2"}}]}}
    other = {"Responses": {"t": [{"a": {"S": "2"}}, {"a": {"S": "1"}}]}}
    assert _comparable("BatchGetItem", 200, one) == _comparable("BatchGetItem", 200, other)
    assert _comparable("Query", 200, one) != _comparable("Query", 200, other)
    # Capacity units are left out, and the error type's namespace with them.
    assert _comparable("GetItem", 200, {"ConsumedCapacity": {"CapacityUnits": 1.0}}) == {
        "status": 200
    }
    assert _comparable(
        "PutItem", 400, {"__type": "com.amazonaws.dynamodb.v20120810#ValidationException"}
    ) == {
        "status": 400,
        "__type": "ValidationException",
    }
