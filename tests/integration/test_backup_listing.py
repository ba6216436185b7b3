"""Describe and List requests of exports and imports: their members are checked as DynamoDB
checks them, and a TableArn filter keeps only that table's records."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError


@pytest.fixture
def raw(endpoint: str, client_factory: Any) -> Any:
    """A client that sends what it is given, so that the server's own checks are reached."""
    return client_factory(
        endpoint, config=Config(parameter_validation=False, retries={"max_attempts": 1})
    )


def _error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


@pytest.mark.parametrize(
    ("operation", "member", "wire"),
    [("list_exports", "MaxResults", "maxResults"), ("list_imports", "PageSize", "pageSize")],
)
def test_a_page_size_below_one_is_refused_naming_the_member(
    raw: Any, operation: str, member: str, wire: str
) -> None:
    code, message = _error(getattr(raw, operation), **{member: 0})
    assert code == "ValidationException"
    assert f"'{wire}'" in message


@pytest.mark.parametrize(
    ("operation", "member", "wire"),
    [("describe_export", "ExportArn", "exportArn"), ("describe_import", "ImportArn", "importArn")],
)
def test_an_arn_too_short_to_be_one_is_refused_naming_the_member(
    raw: Any, operation: str, member: str, wire: str
) -> None:
    code, message = _error(getattr(raw, operation), **{member: "arn:short"})
    assert code == "ValidationException"
    assert f"'{wire}'" in message


@pytest.mark.parametrize(
    ("operation", "member", "missing"),
    [
        ("describe_export", "ExportArn", "ExportNotFoundException"),
        ("describe_import", "ImportArn", "ImportNotFoundException"),
    ],
)
def test_an_unknown_arn_is_not_found(ddb: Any, operation: str, member: str, missing: str) -> None:
    arn = "arn:aws:dynamodb:us-east-1:000000000000:table/nobody/export/01234567890123-abcdefgh"
    code, _ = _error(getattr(ddb, operation), **{member: arn})
    assert code == missing


def test_a_table_filter_of_a_table_without_exports_or_imports_lists_nothing(ddb: Any) -> None:
    arn = "arn:aws:dynamodb:us-east-1:000000000000:table/never-exported"
    assert ddb.list_exports(TableArn=arn)["ExportSummaries"] == []
    assert ddb.list_imports(TableArn=arn)["ImportSummaryList"] == []
