"""Items and the table statistics survive a server killed with SIGKILL in the middle of
concurrent writes: every acknowledged write is there after the restart, and ItemCount and
TableSizeBytes agree with the items that are."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

WRITERS = 4
WRITE_SECONDS = 1.5  # how long the writers run before the server is killed
JOIN_SECONDS_MAX = 30.0


def _item_size(item: dict[str, Any]) -> int:
    # Only S and N (small integers) attributes are written here: name bytes + value bytes, a
    # number of d digits taking (d + 1) // 2 + 1 bytes.
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        if "S" in value:
            size += len(value["S"].encode())
        else:
            digits = value["N"].lstrip("-").strip("0") or "0"
            size += 1 if digits == "0" else (len(digits) + 1) // 2 + 1
    return size


def test_acknowledged_writes_and_statistics_survive_sigkill(
    server_factory: Callable[..., Any], client_factory: Callable[..., Any], tmp_path: Any
) -> None:
    data = tmp_path / "data"
    first = server_factory(data_dir=data)
    ddb = client_factory(first.url)
    ddb.create_table(
        TableName="crashy",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # Per key, the state its last acknowledged write left; per writer, the one write it had
    # in flight when the server died (each writer waits for an answer before the next write).
    acknowledged: dict[str, dict[str, Any] | None] = {}
    in_flight: dict[int, tuple[str, dict[str, Any] | None]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(number: int) -> None:
        client = client_factory(first.url)
        i = 0
        while not stop.is_set():
            key = f"w{number}-{i % 25}"
            i += 1
            item: dict[str, Any] | None = None
            if i % 5:
                item = {"pk": {"S": key}, "n": {"N": str(i)}, "pad": {"S": "x" * (i % 50)}}
            with lock:
                in_flight[number] = (key, item)
            try:
                if item is None:
                    client.delete_item(TableName="crashy", Key={"pk": {"S": key}})
                else:
                    client.put_item(TableName="crashy", Item=item)
            except (ClientError, BotoCoreError):
                return  # the server is gone: this write was never acknowledged
            with lock:
                acknowledged[key] = item
                del in_flight[number]

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    time.sleep(WRITE_SECONDS)
    first.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(JOIN_SECONDS_MAX)
        assert not thread.is_alive()
    assert acknowledged, "no write was acknowledged before the kill"

    second = server_factory(data_dir=data)
    ddb = client_factory(second.url)
    present: dict[str, dict[str, Any]] = {}
    for number in range(WRITERS):
        for j in range(25):
            key = f"w{number}-{j}"
            got = ddb.get_item(TableName="crashy", Key={"pk": {"S": key}}, ConsistentRead=True)
            if "Item" in got:
                present[key] = got["Item"]
            state = present.get(key)
            allowed = [acknowledged.get(key)]
            pending = in_flight.get(number)
            if pending is not None and pending[0] == key:
                allowed.append(pending[1])  # the write in flight may or may not have landed
            assert state in allowed, (key, state, allowed)
    described = ddb.describe_table(TableName="crashy")["Table"]
    assert described["ItemCount"] == len(present)
    assert described["TableSizeBytes"] == sum(_item_size(i) for i in present.values())
