"""boto3's `lambda` client against `keeldb serve`: every function operation, invocation types,
concurrency and account settings, with Lambda's error types, statuses and messages."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/keeldb-test"
_numbers = itertools.count(1)
# An invocation's first call starts an instance; on a loaded machine that takes a while.
READ_TIMEOUT_SECONDS = 60


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


ECHO = """
import os
def handler(event, context):
    print("echo", event)
    return {"event": event, "name": context.function_name,
            "endpoint": os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"),
            "region": os.environ.get("AWS_REGION"), "custom": os.environ.get("CUSTOM"),
            "handler": os.environ.get("_HANDLER"),
            "memory": os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")}
"""
FAILING = """
def handler(event, context):
    raise ValueError("broken on purpose")
"""
SLEEPY = """
import time
def handler(event, context):
    time.sleep(event.get("seconds", 1))
    return "done"
"""


@pytest.fixture(scope="module")
def lam(endpoint: str) -> Any:
    return boto3.client(
        "lambda",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="AKIDKEELDBTEST",
        aws_secret_access_key="keeldb-test-secret",
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            read_timeout=READ_TIMEOUT_SECONDS,
            connect_timeout=5,
        ),
    )


@pytest.fixture
def function_factory(lam: Any) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def create(code: str = ECHO, **args: Any) -> str:
        name = f"fn{next(_numbers)}-{uuid.uuid4().hex[:8]}"
        settings: dict[str, Any] = {
            "FunctionName": name,
            "Runtime": "python3.12",
            "Role": ROLE,
            "Handler": "app.handler",
            "Code": {"ZipFile": zip_of({"app.py": code})},
        }
        settings.update(args)
        lam.create_function(**settings)
        created.append(name)
        return name

    yield create
    for name in created:
        try:
            lam.delete_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass


def error_of(caught: pytest.ExceptionInfo[Any]) -> tuple[str, str, int]:
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


# -- functions ----------------------------------------------------------------------------


def test_create_function_answers_its_configuration_with_201(lam: Any) -> None:
    name = f"created-{uuid.uuid4().hex[:8]}"
    data = zip_of({"app.py": ECHO})
    answer = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": data},
        Description="a test",
        Timeout=10,
        MemorySize=256,
        Environment={"Variables": {"CUSTOM": "value"}},
    )
    try:
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 201
        assert answer["FunctionName"] == name
        assert answer["FunctionArn"] == f"arn:aws:lambda:{REGION}:000000000000:function:{name}"
        assert answer["Timeout"] == 10
        assert answer["MemorySize"] == 256
        assert answer["Description"] == "a test"
        assert answer["Environment"] == {"Variables": {"CUSTOM": "value"}}
        assert answer["CodeSize"] == len(data)
        import hashlib

        assert answer["CodeSha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
        assert answer["State"] == "Active"
        # The SDK's waiters, as deployment tools use them, finish at once.
        lam.get_waiter("function_active_v2").wait(FunctionName=name)
        lam.update_function_configuration(FunctionName=name, Timeout=11)
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        assert lam.get_function_configuration(FunctionName=name)["Timeout"] == 11
    finally:
        lam.delete_function(FunctionName=name)


def test_creating_a_function_twice_is_a_conflict(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    with pytest.raises(lam.exceptions.ResourceConflictException) as caught:
        lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": zip_of({"app.py": ECHO})},
        )
    assert error_of(caught) == (
        "ResourceConflictException",
        f"Function already exist: {name}",
        409,
    )


def test_get_function_answers_configuration_and_a_code_location(
    lam: Any, function_factory: Any
) -> None:
    name = function_factory()
    answer = lam.get_function(FunctionName=name)
    assert answer["Configuration"]["FunctionName"] == name
    assert answer["Code"]["RepositoryType"] == "S3"
    import urllib.request

    with urllib.request.urlopen(answer["Code"]["Location"], timeout=10) as response:
        downloaded = response.read()
    with zipfile.ZipFile(io.BytesIO(downloaded)) as archive:
        assert archive.read("app.py").decode() == ECHO


def test_a_function_is_found_by_its_arn_too(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    assert lam.get_function_configuration(FunctionName=arn)["FunctionName"] == name


def test_an_unknown_function_is_not_found_with_its_arn_in_the_message(lam: Any) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as caught:
        lam.get_function(FunctionName="no-such-function")
    assert error_of(caught) == (
        "ResourceNotFoundException",
        f"Function not found: arn:aws:lambda:{REGION}:000000000000:function:no-such-function",
        404,
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="no-such-function")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName="no-such-function")


def test_a_published_version_qualifier_is_not_found(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    assert lam.get_function(FunctionName=name, Qualifier="$LATEST")["Configuration"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="7")


def test_list_functions_pages_with_marker_and_max_items(lam: Any, function_factory: Any) -> None:
    names = {function_factory() for _ in range(3)}
    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        args: dict[str, Any] = {"MaxItems": 2}
        if marker:
            args["Marker"] = marker
        answer = lam.list_functions(**args)
        assert len(answer["Functions"]) <= 2
        seen.extend(f["FunctionName"] for f in answer["Functions"])
        pages += 1
        marker = answer.get("NextMarker")
        if not marker:
            break
    assert names <= set(seen)
    assert len(seen) == len(set(seen))
    assert pages >= 2


def test_memory_and_timeout_outside_lambdas_limits_are_refused(lam: Any) -> None:
    args = {
        "FunctionName": f"bad-{uuid.uuid4().hex[:8]}",
        "Runtime": "python3.12",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": zip_of({"app.py": ECHO})},
    }
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as caught:
        lam.create_function(**args, MemorySize=10241)
    assert error_of(caught)[2] == 400
    assert error_of(caught)[1] == (
        "'MemorySize' value failed to satisfy constraint: Member must have value less than or "
        "equal to 10240"
    )
    with pytest.raises(lam.exceptions.ClientError) as caught:
        lam.create_function(**args, Timeout=901)
    assert error_of(caught) == (
        "ValidationException",
        (
            "1 validation error detected: Value '901' at 'timeout' failed to satisfy "
            "constraint: Member must have value less than or equal to 900"
        ),
        400,
    )
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(**{**args, "Runtime": "nodejs20.x"})
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as caught:
        lam.create_function(**{**args, "Code": {"ZipFile": b"not a zip"}})
    assert "Could not unzip" in error_of(caught)[1]
    assert args["FunctionName"] not in {
        f["FunctionName"] for f in lam.list_functions()["Functions"]
    }


def test_update_function_code_changes_what_runs(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    lam.invoke(FunctionName=name, Payload=b"{}")
    new = zip_of({"app.py": "def handler(event, context):\n    return 'v2'\n"})
    answer = lam.update_function_code(FunctionName=name, ZipFile=new)
    assert answer["CodeSize"] == len(new)
    result = lam.invoke(FunctionName=name, Payload=b"{}")
    assert json.loads(result["Payload"].read()) == "v2"


def test_update_function_configuration_changes_environment_and_keeps_the_rest(
    lam: Any, function_factory: Any
) -> None:
    name = function_factory(Timeout=5)
    lam.invoke(FunctionName=name, Payload=b"{}")
    answer = lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"CUSTOM": "changed"}}, MemorySize=512
    )
    assert answer["Timeout"] == 5
    assert answer["MemorySize"] == 512
    result = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
    assert result["custom"] == "changed"
    assert result["memory"] == "512"


def test_a_stale_revision_id_fails_the_precondition(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    with pytest.raises(lam.exceptions.PreconditionFailedException) as caught:
        lam.update_function_configuration(FunctionName=name, Timeout=9, RevisionId="stale")
    assert error_of(caught)[2] == 412


def test_a_deleted_function_is_gone(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_configuration(FunctionName=name)


# -- invocation ---------------------------------------------------------------------------


# On a cluster the function service runs on one node (the functions home) and a handler's
# environment names that node's endpoint, which serves the whole database as any router does
# (docs/functions.md, "The handler's environment"); on a single node it is the node's own.
CLUSTER = bool(os.environ.get("KEELDB_TEST_ENDPOINT"))


def test_invoke_answers_the_handlers_result_and_the_environment_it_ran_in(
    lam: Any, function_factory: Any, endpoint: str
) -> None:
    name = function_factory(Environment={"Variables": {"CUSTOM": "yes"}})
    answer = lam.invoke(FunctionName=name, Payload=json.dumps({"a": 1}).encode())
    assert answer["StatusCode"] == 200
    assert answer["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in answer
    result = json.loads(answer["Payload"].read())
    assert result["event"] == {"a": 1}
    assert result["name"] == name
    if CLUSTER:
        assert result["endpoint"].startswith("http://")
    else:
        assert result["endpoint"] == endpoint
    assert result["region"] == REGION
    assert result["custom"] == "yes"
    assert result["handler"] == "app.handler"


def test_a_handler_reaches_the_database_at_the_endpoint_its_environment_names(
    lam: Any, function_factory: Any, ddb: Any, table_factory: Any, client_factory: Any
) -> None:
    table = table_factory()
    ddb.put_item(TableName=table, Item={"pk": {"S": "seen"}, "n": {"N": "7"}})
    code = f"""
import os
import boto3
def handler(event, context):
    found = boto3.client("dynamodb").get_item(
        TableName="{table}", Key={{"pk": {{"S": "seen"}}}}, ConsistentRead=True
    )
    return {{"item": found.get("Item"), "endpoint": os.environ["AWS_ENDPOINT_URL_DYNAMODB"]}}
"""
    name = function_factory(code)
    answer = lam.invoke(FunctionName=name, Payload=b"{}")
    assert "FunctionError" not in answer, answer["Payload"].read()
    result = json.loads(answer["Payload"].read())
    # boto3 in the handler, with no endpoint of its own, reads the item the client wrote (a
    # strongly consistent read: an eventually consistent one may miss a write just made,
    # on DynamoDB as on a cluster's followers).
    assert result["item"] == {"pk": {"S": "seen"}, "n": {"N": "7"}}
    # The endpoint it names serves the same database to anyone.
    named = client_factory(result["endpoint"])
    found = named.get_item(TableName=table, Key={"pk": {"S": "seen"}}, ConsistentRead=True)
    assert found["Item"]["n"] == {"N": "7"}


def test_tail_log_type_answers_the_log_in_base64(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    answer = lam.invoke(FunctionName=name, Payload=b'{"marker": "m-42"}', LogType="Tail")
    text = base64.b64decode(answer["LogResult"]).decode()
    assert "echo {'marker': 'm-42'}" in text
    assert text.startswith("START RequestId: ")
    assert "REPORT RequestId: " in text
    assert "LogResult" not in lam.invoke(FunctionName=name, Payload=b"{}")


def test_a_handler_exception_is_a_200_with_the_function_error_header(
    lam: Any, function_factory: Any
) -> None:
    name = function_factory(FAILING)
    answer = lam.invoke(FunctionName=name, Payload=b"{}")
    assert answer["StatusCode"] == 200
    assert answer["FunctionError"] == "Unhandled"
    payload = json.loads(answer["Payload"].read())
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "broken on purpose"
    assert isinstance(payload["stackTrace"], list)


def test_a_handler_running_past_its_timeout_is_stopped(lam: Any, function_factory: Any) -> None:
    name = function_factory(SLEEPY, Timeout=1)
    started = time.monotonic()
    answer = lam.invoke(FunctionName=name, Payload=b'{"seconds": 30}')
    assert time.monotonic() - started < 20
    assert answer["FunctionError"] == "Unhandled"
    payload = json.loads(answer["Payload"].read())
    assert "Task timed out after 1.00 seconds" in payload["errorMessage"]
    # The function still works afterwards.
    assert lam.invoke(FunctionName=name, Payload=b'{"seconds": 0}')["StatusCode"] == 200


def test_dry_run_answers_204_without_running(lam: Any, function_factory: Any) -> None:
    name = function_factory(FAILING)
    answer = lam.invoke(FunctionName=name, InvocationType="DryRun", Payload=b"{}")
    assert answer["StatusCode"] == 204
    assert "FunctionError" not in answer


def test_payloads_above_lambdas_limits_are_too_large(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    big_sync = json.dumps("x" * (6 * 1024 * 1024)).encode()
    with pytest.raises(lam.exceptions.RequestTooLargeException) as caught:
        lam.invoke(FunctionName=name, Payload=big_sync)
    assert error_of(caught) == (
        "RequestTooLargeException",
        "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
        413,
    )
    big_event = json.dumps("x" * (1024 * 1024)).encode()
    with pytest.raises(lam.exceptions.RequestTooLargeException) as caught:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=big_event)
    assert error_of(caught)[1] == (
        "Request must be smaller than 1048576 bytes for the InvokeFunction operation"
    )


def test_a_payload_that_is_not_json_is_refused(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    with pytest.raises(lam.exceptions.InvalidRequestContentException) as caught:
        lam.invoke(FunctionName=name, Payload=b"{not json")
    assert error_of(caught)[2] == 400


def test_an_event_invocation_is_accepted_and_runs_later(
    lam: Any, function_factory: Any, ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    code = f"""
import boto3
def handler(event, context):
    boto3.client("dynamodb").put_item(TableName="{table}", Item={{"pk": {{"S": event["key"]}}}})
"""
    name = function_factory(code)
    answer = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"key": "queued"}')
    assert answer["StatusCode"] == 202
    deadline = time.monotonic() + 30
    while "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "queued"}}):
        assert time.monotonic() < deadline, "the event never ran"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_failing_event_is_retried_twice(
    lam: Any, function_factory: Any, ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    code = f"""
import boto3
def handler(event, context):
    boto3.client("dynamodb").update_item(
        TableName="{table}", Key={{"pk": {{"S": "attempts"}}}},
        UpdateExpression="ADD n :one", ExpressionAttributeValues={{":one": {{"N": "1"}}}})
    raise RuntimeError("fail every time")
"""
    name = function_factory(code)
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")

    def attempts() -> int:
        item = ddb.get_item(TableName=table, Key={"pk": {"S": "attempts"}}).get("Item")
        return int(item["n"]["N"]) if item else 0

    deadline = time.monotonic() + 60
    while attempts() < 3:
        assert time.monotonic() < deadline, f"only {attempts()} attempts"
        time.sleep(0.1)
    time.sleep(3.5)  # longer than the last retry delay: no fourth attempt comes
    assert attempts() == 3


# -- concurrency and account --------------------------------------------------------------


def test_function_concurrency_is_put_read_and_deleted(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    answer = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert answer["ReservedConcurrentExecutions"] == 5
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    deleted = lam.delete_function_concurrency(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)


def test_a_reservation_of_zero_throttles_with_429(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException) as caught:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert error_of(caught) == ("TooManyRequestsException", "Rate Exceeded.", 429)
    assert caught.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_invocations_beyond_the_reservation_are_throttled_while_it_is_busy(
    lam: Any, function_factory: Any
) -> None:
    name = function_factory(SLEEPY, Timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    answers: list[Any] = []
    throttled: list[Any] = []

    def call() -> None:
        try:
            answers.append(lam.invoke(FunctionName=name, Payload=b'{"seconds": 3}'))
        except lam.exceptions.TooManyRequestsException as error:
            throttled.append(error)

    # Started together, the calls overlap: one holds the single slot for three seconds.
    workers = [threading.Thread(target=call) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(90)
    assert len(answers) >= 1
    assert all(answer["StatusCode"] == 200 for answer in answers)
    assert len(throttled) >= 1
    assert all(
        error.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
        for error in throttled
    )
    assert len(answers) + len(throttled) == 4


def test_a_reservation_leaving_fewer_than_100_unreserved_is_refused(
    lam: Any, function_factory: Any
) -> None:
    name = function_factory()
    limit = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as caught:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=limit)
    assert "below its minimum value of [100]" in error_of(caught)[1]


def test_account_settings_count_functions_and_reservations(
    lam: Any, function_factory: Any, endpoint: str
) -> None:
    before = lam.get_account_settings()
    name = function_factory()
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=7)
    after = lam.get_account_settings()
    assert after["AccountLimit"]["ConcurrentExecutions"] == 1000
    assert (
        after["AccountLimit"]["UnreservedConcurrentExecutions"]
        == before["AccountLimit"]["UnreservedConcurrentExecutions"] - 7
    )
    assert after["AccountUsage"]["FunctionCount"] >= 1
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}/2016-08-19/account-settings/", timeout=10) as r:
        raw = json.loads(r.read())
    assert isinstance(raw["IsolationLayers"], dict)
    assert all(isinstance(v, bool) for v in raw["IsolationLayers"].values())


def test_an_unknown_lambda_path_is_a_404(endpoint: str) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{endpoint}/2015-03-31/nothing-here", timeout=10)
    assert caught.value.code == 404
    assert caught.value.headers["x-amzn-ErrorType"] == "UnknownOperationException"


def test_latest_cannot_be_deleted_on_its_own(lam: Any, function_factory: Any) -> None:
    name = function_factory()
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")
    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name


def test_a_server_without_functions_serves_no_lambda_api(server_factory: Any) -> None:
    process = server_factory("--no-functions", "--in-memory")
    lam = boto3.client(
        "lambda",
        region_name=REGION,
        endpoint_url=process.url,
        aws_access_key_id="any",
        aws_secret_access_key="any",
        config=Config(retries={"max_attempts": 1}),
    )
    try:
        answer = lam.list_functions()
    except lam.exceptions.ClientError:
        return
    assert "Functions" not in answer


def test_invoke_async_queues_the_event(
    lam: Any, function_factory: Any, ddb: Any, table_factory: Any
) -> None:
    table = table_factory()
    code = f"""
import boto3
def handler(event, context):
    boto3.client("dynamodb").put_item(TableName="{table}", Item={{"pk": {{"S": event["key"]}}}})
"""
    name = function_factory(code)
    answer = lam.invoke_async(FunctionName=name, InvokeArgs=b'{"key": "async"}')
    assert answer["Status"] == 202
    deadline = time.monotonic() + 30
    while "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "async"}}):
        assert time.monotonic() < deadline, "the event never ran"
        time.sleep(0.05)


def test_function_tags_are_set_listed_and_removed(lam: Any, function_factory: Any) -> None:
    name = function_factory(Tags={"team": "data"})
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "data"}
    lam.tag_resource(Resource=arn, Tags={"env": "test", "team": "core"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", "env": "test"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"team": "core", "env": "test"}
    lam.untag_resource(Resource=arn, TagKeys=["team", "absent"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"env": "test"}
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=arn.replace(name, "no-such-function"))
