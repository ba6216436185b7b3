"""Stream pollers against a fake stream, a fake pool and a fake database: batching, retries,
bisection, partial batch failures, on-failure records, throttling and checkpoints."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

FAILURES_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/failures"


def keys(event: dict[str, Any]) -> list[str]:
    return [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]


def delivered(pool: Any, name: str = "f") -> list[list[str]]:
    return [keys(event) for fn, event in pool.events if fn == name]


async def start(harness: Any, fakes: Any, mapping: dict[str, Any], **options: Any) -> Any:
    service = harness.service(**options)
    await service.start()
    if "f" not in service.store.functions:
        await service.create_function(fakes.create_body("f"))
    if mapping:
        body = {"EventSourceArn": fakes.STREAM_ARN, "FunctionName": "f"}
        body.update(mapping)
        await service.create_mapping(body)
    return service


def test_mapping_delivers_every_record_in_order_in_batches_of_batch_size(harness, fakes):
    async def scenario() -> None:
        for i in range(25):
            harness.streams.put(f"k{i}")
        harness.pool.handlers["f"] = lambda event: None
        service = await start(harness, fakes, {"StartingPosition": "TRIM_HORIZON", "BatchSize": 10})
        await fakes.eventually(lambda: sum(map(len, delivered(harness.pool))) == 25)
        await service.close()
        batches = delivered(harness.pool)
        assert [len(b) for b in batches] == [10, 10, 5]
        assert [k for b in batches for k in b] == [f"k{i}" for i in range(25)]
        event = harness.pool.events[0][1]
        assert event["Records"][0]["eventSourceARN"] == fakes.STREAM_ARN
        assert event["Records"][0]["eventSource"] == "aws:dynamodb"

    asyncio.run(scenario())


def test_records_written_after_the_mapping_starts_are_delivered(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: None
        service = await start(harness, fakes, {"StartingPosition": "TRIM_HORIZON"})
        await asyncio.sleep(0.1)
        harness.streams.put("late")
        await fakes.eventually(lambda: delivered(harness.pool) == [["late"]])
        await service.close()

    asyncio.run(scenario())


def test_a_failed_batch_is_retried_until_the_function_succeeds(harness, fakes):
    async def scenario() -> None:
        for i in range(3):
            harness.streams.put(f"k{i}")
        calls = []

        def flaky(event: Any) -> None:
            calls.append(keys(event))
            if len(calls) <= 2:
                raise RuntimeError("not yet")

        harness.pool.handlers["f"] = flaky
        service = await start(harness, fakes, {"StartingPosition": "TRIM_HORIZON"})
        uuid = next(iter(service.store.mappings))
        await fakes.eventually(lambda: len(calls) == 3)
        await fakes.eventually(lambda: service.store.positions.get(uuid) is not None)
        await service.close()
        assert calls == [["k0", "k1", "k2"]] * 3
        (position,) = service.store.positions[uuid].values()
        assert position["after"] == harness.streams.records[-1]["dynamodb"]["SequenceNumber"]

    asyncio.run(scenario())


def test_bisection_isolates_a_poison_record_and_the_failure_table_gets_its_batch(harness, fakes):
    async def scenario() -> None:
        sequences = [harness.streams.put(f"k{i}") for i in range(8)]

        def poison(event: Any) -> None:
            if "k5" in keys(event):
                raise ValueError("poison")

        harness.pool.handlers["f"] = poison
        service = await start(
            harness,
            fakes,
            {
                "StartingPosition": "TRIM_HORIZON",
                "BisectBatchOnFunctionError": True,
                "MaximumRetryAttempts": 1,
                "DestinationConfig": {"OnFailure": {"Destination": FAILURES_ARN}},
            },
        )
        await fakes.eventually(lambda: len(harness.database.items.get("failures", [])) == 1)
        uuid = next(iter(service.store.mappings))
        await fakes.eventually(
            lambda: (
                (service.store.positions.get(uuid) or {}) != {}
                and next(iter(service.store.positions[uuid].values()))["after"] == sequences[-1]
            )
        )
        await service.close()
        (item,) = harness.database.items["failures"]
        assert item["startSequenceNumber"] == {"S": sequences[5]}
        assert item["endSequenceNumber"] == {"S": sequences[5]}
        assert item["batchSize"] == {"N": "1"}
        assert item["condition"] == {"S": "RetryAttemptsExhausted"}
        record = orjson.loads(item["record"]["S"])
        assert record["DDBStreamBatchInfo"]["streamArn"] == fakes.STREAM_ARN
        succeeded = {k for batch in delivered(harness.pool) if "k5" not in batch for k in batch}
        assert succeeded == {f"k{i}" for i in range(8)} - {"k5"}

    asyncio.run(scenario())


def test_without_bisection_a_failing_batch_goes_whole_to_the_failure_table(harness, fakes):
    async def scenario() -> None:
        for i in range(4):
            harness.streams.put(f"k{i}")

        def fail(event: Any) -> None:
            raise ValueError("always")

        harness.pool.handlers["f"] = fail
        service = await start(
            harness,
            fakes,
            {
                "StartingPosition": "TRIM_HORIZON",
                "MaximumRetryAttempts": 2,
                "DestinationConfig": {"OnFailure": {"Destination": FAILURES_ARN}},
            },
        )
        await fakes.eventually(lambda: len(harness.database.items.get("failures", [])) == 1)
        await service.close()
        # One attempt and two retries, each with the whole batch.
        assert delivered(harness.pool) == [["k0", "k1", "k2", "k3"]] * 3
        assert harness.database.items["failures"][0]["batchSize"] == {"N": "4"}

    asyncio.run(scenario())


def test_reported_item_failures_resume_the_batch_at_the_first_failed_record(harness, fakes):
    async def scenario() -> None:
        sequences = [harness.streams.put(f"k{i}") for i in range(6)]
        answers = [
            {
                "batchItemFailures": [
                    {"itemIdentifier": sequences[4]},
                    {"itemIdentifier": sequences[3]},
                ]
            }
        ]

        def partial(event: Any) -> Any:
            return answers.pop(0) if answers else {"batchItemFailures": []}

        harness.pool.handlers["f"] = partial
        service = await start(
            harness,
            fakes,
            {
                "StartingPosition": "TRIM_HORIZON",
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
        )
        await fakes.eventually(lambda: len(delivered(harness.pool)) == 2)
        await service.close()
        assert delivered(harness.pool) == [[f"k{i}" for i in range(6)], ["k3", "k4", "k5"]]

    asyncio.run(scenario())


def test_item_failures_are_ignored_unless_the_mapping_asks_for_them(harness, fakes):
    async def scenario() -> None:
        sequences = [harness.streams.put(f"k{i}") for i in range(2)]
        harness.pool.handlers["f"] = lambda event: {
            "batchItemFailures": [{"itemIdentifier": sequences[0]}]
        }
        service = await start(harness, fakes, {"StartingPosition": "TRIM_HORIZON"})
        await fakes.eventually(lambda: len(delivered(harness.pool)) == 1)
        await asyncio.sleep(0.2)
        await service.close()
        assert delivered(harness.pool) == [["k0", "k1"]]

    asyncio.run(scenario())


def test_a_throttled_mapping_pauses_and_delivers_everything_once_allowed(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: None
        service = harness.service()
        await service.start()
        await service.create_function(fakes.create_body("f"))
        await service.put_concurrency("f", {"ReservedConcurrentExecutions": 0})
        await service.create_mapping(
            {
                "EventSourceArn": fakes.STREAM_ARN,
                "FunctionName": "f",
                "StartingPosition": "TRIM_HORIZON",
            }
        )
        for i in range(5):
            harness.streams.put(f"k{i}")
        await asyncio.sleep(0.5)
        assert delivered(harness.pool) == []
        mapping = next(iter(service.store.mappings.values()))
        assert "throttled" in mapping["last_result"]
        await service.delete_concurrency("f")
        await fakes.eventually(lambda: sum(map(len, delivered(harness.pool))) == 5)
        await service.close()
        assert [k for b in delivered(harness.pool) for k in b] == [f"k{i}" for i in range(5)]

    asyncio.run(scenario())


def test_after_a_restart_processing_resumes_after_the_checkpoint(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: None
        for i in range(5):
            harness.streams.put(f"a{i}")
        service = await start(harness, fakes, {"StartingPosition": "TRIM_HORIZON"})
        uuid = next(iter(service.store.mappings))
        await fakes.eventually(lambda: sum(map(len, delivered(harness.pool))) == 5)
        await fakes.eventually(lambda: bool(service.store.positions.get(uuid)))
        await service.close()
        for i in range(3):
            harness.streams.put(f"b{i}")
        harness.pool.events.clear()
        service = await start(harness, fakes, {})
        await fakes.eventually(lambda: sum(map(len, delivered(harness.pool))) == 3)
        await asyncio.sleep(0.2)
        await service.close()
        assert [k for b in delivered(harness.pool) for k in b] == ["b0", "b1", "b2"]

    asyncio.run(scenario())


def test_a_latest_mapping_skips_records_written_before_it_was_created(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: None
        harness.streams.put("old", created=harness.now - 10)
        service = await start(harness, fakes, {"StartingPosition": "LATEST"})
        harness.streams.put("new", created=harness.now + 1)
        await fakes.eventually(lambda: delivered(harness.pool) == [["new"]])
        await service.close()

    asyncio.run(scenario())


def test_records_older_than_the_maximum_age_skip_the_function(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: None
        harness.streams.put("stale", created=harness.now - 120)
        harness.streams.put("fresh", created=harness.now - 1)
        service = await start(
            harness,
            fakes,
            {
                "StartingPosition": "TRIM_HORIZON",
                "MaximumRecordAgeInSeconds": 60,
                "DestinationConfig": {"OnFailure": {"Destination": FAILURES_ARN}},
            },
        )
        await fakes.eventually(lambda: delivered(harness.pool) == [["fresh"]])
        await service.close()
        (item,) = harness.database.items["failures"]
        assert item["condition"] == {"S": "RecordAgeExceeded"}

    asyncio.run(scenario())


def test_a_checkpoint_in_trimmed_records_continues_from_the_oldest_record(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: None
        harness.streams.put("a0")
        service = await start(harness, fakes, {"StartingPosition": "TRIM_HORIZON"})
        await fakes.eventually(lambda: delivered(harness.pool) == [["a0"]])
        await service.close()
        for i in range(3):
            harness.streams.put(f"b{i}")
        harness.streams.trimmed_before = 2  # a0 and b0 are gone
        harness.pool.events.clear()
        service = await start(harness, fakes, {})
        await fakes.eventually(lambda: delivered(harness.pool) == [["b1", "b2"]])
        await service.close()

    asyncio.run(scenario())


def test_a_disabled_mapping_reads_nothing_until_enabled(harness, fakes):
    async def scenario() -> None:
        harness.pool.handlers["f"] = lambda event: None
        harness.streams.put("k0")
        service = await start(
            harness, fakes, {"StartingPosition": "TRIM_HORIZON", "Enabled": False}
        )
        uuid = next(iter(service.store.mappings))
        await asyncio.sleep(0.3)
        assert delivered(harness.pool) == []
        assert service.get_mapping(uuid)["State"] == "Disabled"
        await service.update_mapping(uuid, {"Enabled": True})
        await fakes.eventually(lambda: delivered(harness.pool) == [["k0"]])
        assert service.get_mapping(uuid)["State"] == "Enabled"
        await service.close()

    asyncio.run(scenario())


def crash_during_first_invocation(harness: Any, fakes: Any) -> set[str]:
    """Stop the service while the function runs its first batch (as kill -9 would, the
    poller gets no chance to finish), restart it, and answer the keys never processed."""
    processed: set[str] = set()

    async def scenario() -> None:
        for i in range(4):
            harness.streams.put(f"k{i}")
        harness.pool.handlers["f"] = lambda event: processed.update(keys(event))
        harness.pool.gate = asyncio.Event()
        service = await start(harness, fakes, {"StartingPosition": "TRIM_HORIZON"})
        await fakes.eventually(lambda: harness.pool.running == 1)
        await service.close()
        harness.pool.gate = None
        service = await start(harness, fakes, {})
        await asyncio.sleep(0.5)
        await service.close()

    asyncio.run(scenario())
    return {f"k{i}" for i in range(4)} - processed


def test_a_crash_during_an_invocation_delivers_the_batch_again_after_restart(harness, fakes):
    assert crash_during_first_invocation(harness, fakes) == set()


def test_the_crash_check_catches_a_poller_that_checkpoints_before_invoking(
    harness, fakes, monkeypatch
):
    from keeldb.functions.poller import StreamPoller, _sequence

    original = StreamPoller._handle

    async def checkpoint_first(self: Any, shard_id: str, records: list[dict[str, Any]]) -> None:
        await self._checkpoint(shard_id, _sequence(records[-1]))
        await original(self, shard_id, records)

    monkeypatch.setattr(StreamPoller, "_handle", checkpoint_first)
    assert crash_during_first_invocation(harness, fakes) == {"k0", "k1", "k2", "k3"}


def test_a_log_group_destination_gets_the_failure_record_in_the_log(harness, fakes, caplog):
    async def scenario() -> None:
        harness.streams.put("k0")

        def fail(event: Any) -> None:
            raise ValueError("always")

        harness.pool.handlers["f"] = fail
        service = await start(
            harness,
            fakes,
            {
                "StartingPosition": "TRIM_HORIZON",
                "MaximumRetryAttempts": 0,
                "DestinationConfig": {
                    "OnFailure": {
                        "Destination": "arn:aws:logs:us-east-1:000000000000:log-group:failed"
                    }
                },
            },
        )
        await fakes.eventually(lambda: "on-failure record" in caplog.text)
        await service.close()

    caplog.set_level("WARNING", logger="keeldb.functions")
    asyncio.run(scenario())
    line = next(r.getMessage() for r in caplog.records if "on-failure record" in r.getMessage())
    record = orjson.loads(line.split(": ", 1)[1])
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["DDBStreamBatchInfo"]["batchSize"] == 1
    assert harness.database.items == {}


def test_a_mapping_disabled_while_retrying_resumes_from_its_checkpoint(harness, fakes):
    async def scenario() -> None:
        for i in range(3):
            harness.streams.put(f"k{i}")
        healthy = asyncio.Event()

        def handler(event: Any) -> None:
            if not healthy.is_set():
                raise RuntimeError("down")

        harness.pool.handlers["f"] = handler
        service = await start(harness, fakes, {"StartingPosition": "TRIM_HORIZON"})
        uuid = next(iter(service.store.mappings))
        await fakes.eventually(lambda: len(harness.pool.events) >= 2)
        await service.update_mapping(uuid, {"Enabled": False})
        await asyncio.sleep(0.3)
        calls = len(harness.pool.events)
        await asyncio.sleep(0.5)
        assert len(harness.pool.events) == calls  # no retries while disabled
        healthy.set()
        await service.update_mapping(uuid, {"Enabled": True})
        await fakes.eventually(lambda: bool(service.store.positions.get(uuid)))
        await service.close()
        assert delivered(harness.pool)[-1] == ["k0", "k1", "k2"]

    asyncio.run(scenario())


def test_a_batch_never_exceeds_the_6_mb_payload_and_the_rest_comes_next(harness, fakes):
    async def scenario() -> None:
        for i in range(10):
            harness.streams.put(f"k{i}", pad_bytes=1_000_000)
        harness.pool.handlers["f"] = lambda event: None
        service = await start(harness, fakes, {"StartingPosition": "TRIM_HORIZON"})
        await fakes.eventually(lambda: sum(map(len, delivered(harness.pool))) == 10)
        await asyncio.sleep(0.2)
        await service.close()
        batches = delivered(harness.pool)
        assert [k for b in batches for k in b] == [f"k{i}" for i in range(10)]
        assert len(batches) >= 2
        for _, event in harness.pool.events:
            assert len(orjson.dumps(event)) <= 6 * 1024 * 1024

    asyncio.run(scenario())
