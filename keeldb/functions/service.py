"""The function service of a node: Lambda's API over the node's functions and mappings.

Owns: the FunctionService (function and event source mapping records, their durability through
`store`, the sandbox pool, the invoker and one stream poller per mapping), and `attach`, which
starts it on a node and mounts the Lambda REST API (`rest`) on the node's HTTP front end.

It must never parse HTTP (that is `rest`) nor run user code in the database process: code runs
in the pool's instances, which reach the database only through its endpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keeldb.functions import model
from keeldb.functions.auth import CodeLinks
from keeldb.functions.errors import (
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from keeldb.functions.invoker import Invoker, Outcome
from keeldb.functions.store import FunctionStore

if TYPE_CHECKING:
    from keeldb.api.server import Request, RestResponse
    from keeldb.node import Closer, Node

log = logging.getLogger("keeldb.functions")

# Isolation layers the sandboxes leave out on purpose (see docs/sandbox.md).
LAYERS_ABSENT_BY_DESIGN = frozenset({"net_namespace"})

# The URL path prefixes of the Lambda REST API (API versions of its operation groups).
LAMBDA_PATH_PREFIXES = (
    "/2015-03-31/",  # functions, invocations, event source mappings
    "/2014-11-13/",  # InvokeAsync
    "/2016-08-19/",  # GetAccountSettings
    "/2017-10-31/",  # Put/DeleteFunctionConcurrency
    "/2019-09-30/",  # GetFunctionConcurrency
    "/2017-03-31/",  # TagResource, UntagResource, ListTags
)
STREAMS_TARGET = "DynamoDBStreams_20120810"
# Set to "local" to run functions in plain processes even where sandboxes are available.
POOL_ENVIRONMENT_VARIABLE = "KEELDB_FUNCTION_POOL"
DUMMY_ACCESS_KEY_ID = "keeldb"
DUMMY_SECRET_ACCESS_KEY = "keeldb"


def load_pool_module(prefer_local: bool = False) -> Any:
    """The sandbox package when it is importable, else the unisolated local pool."""
    if not prefer_local:
        try:
            module = importlib.import_module("keeldb.functions.sandbox")
            for name in (
                "SandboxPool",
                "FunctionSpec",
                "SandboxTimeout",
                "SandboxCrashed",
                "SandboxBusy",
            ):
                getattr(module, name)
            return module
        except Exception as error:  # noqa: BLE001 - any failure to load means no sandboxes
            log.warning("function sandboxes unavailable (%s): functions run unisolated", error)
    return importlib.import_module("keeldb.functions.local_pool")


class FunctionService:
    """Everything the Lambda API does, minus HTTP."""

    def __init__(
        self,
        *,
        root: Path | None,
        region: str,
        account: str,
        endpoint_url: str,
        endpoint_port: int,
        credentials: tuple[str, str, str | None] | None = None,
        database: Any = None,
        streams: Any = None,
        account_concurrency: int = model.ACCOUNT_CONCURRENCY_DEFAULT,
        pool_module: Any = None,
        pool: Any = None,
        clock: Any = time.time,
        wait_for_records: Any = None,
        store: FunctionStore | None = None,
    ) -> None:
        self.region = region
        self.account = account
        self.endpoint_url = endpoint_url
        self.endpoint_port = endpoint_port
        self.credentials = credentials
        self.database = database
        # Finds the DynamoDB Streams dispatch, `async (operation, body) -> body`, or None.
        self._streams = streams
        self.clock = clock
        # `async (timeout_seconds) -> bool`: returns when a stream record is written (or the
        # timeout passes); None makes idle pollers look again after a short sleep.
        self.wait_for_records = wait_for_records
        # A cluster's functions home passes a store that also keeps its state replicated.
        self.store = store if store is not None else FunctionStore(root)
        self.pool_module = pool_module or load_pool_module(
            os.environ.get(POOL_ENVIRONMENT_VARIABLE) == "local"
        )
        work_dir = self.store.root / "sandboxes"
        if pool is None:
            pool_class = (
                getattr(self.pool_module, "SandboxPool", None) or self.pool_module.LocalPool
            )
            pool = pool_class(work_dir, endpoint_port=endpoint_port)
        self.pool = pool
        self.invoker = Invoker(
            pool,
            self.spec_for,
            self.reservation,
            lambda name: name in self.store.functions,
            account_limit=account_concurrency,
            function_arn=self.arn,
            pool_module=self.pool_module,
        )
        self.code_links = CodeLinks()
        # Function name -> (revision id, sandbox spec): invocations reuse the spec.
        self._specs: dict[str, tuple[str, Any]] = {}
        self._lock = asyncio.Lock()
        self.pollers: dict[str, Any] = {}

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.store.load)
        try:
            await self.pool.start()
        except Exception:
            if self.pool_module.__name__.endswith("local_pool"):
                raise
            log.exception("the sandbox pool failed to start: functions run unisolated")
            self.pool_module = importlib.import_module("keeldb.functions.local_pool")
            self.pool = self.pool_module.LocalPool(
                self.store.root / "sandboxes", endpoint_port=self.endpoint_port
            )
            self.invoker.use_pool(self.pool, self.pool_module)
            await self.pool.start()
        # Sandboxes share the host's network namespace by design (TCP is confined to the
        # database's port by other layers), so its absence is no reason to warn.
        missing = [
            name
            for name, on in self.isolation_layers().items()
            if not on and name not in LAYERS_ABSENT_BY_DESIGN
        ]
        if not missing:
            log.info("function isolation layers: %s", self.describe_isolation())
        else:
            log.warning("function isolation layers: %s", self.describe_isolation())
        self.invoker.finished = self.store.drop_event
        for event_id, name, received, payload in await asyncio.to_thread(self.store.load_events):
            self.invoker.enqueue(name, payload, event_id=event_id, received=received)
        self.invoker.start()
        for record in self.store.mappings.values():
            self._start_poller(record)

    async def close(self) -> None:
        for poller in list(self.pollers.values()):
            await poller.stop()
        self.pollers.clear()
        await self.invoker.close()
        await self.pool.close()
        self.store.close()

    def describe_isolation(self) -> str:
        layers = self.isolation_layers()
        active = [name for name, on in sorted(layers.items()) if on]
        inactive = [name for name, on in sorted(layers.items()) if not on]
        return f"active: {', '.join(active) or 'none'}; inactive: {', '.join(inactive) or 'none'}"

    def isolation_layers(self) -> dict[str, bool]:
        return dict(self.pool.isolation_layers())

    # -- helpers ----------------------------------------------------------------------------

    def streams_dispatch(self) -> Any:
        return self._streams() if self._streams is not None else None

    def arn(self, name: str) -> str:
        return model.function_arn(self.region, self.account, name)

    def resolve(self, reference: Any, qualifier: str | None = None) -> dict[str, Any]:
        name, arn_qualifier = model.parse_function_reference(reference, self.region, self.account)
        record = self.store.functions.get(name)
        if record is None:
            raise ResourceNotFoundException(f"Function not found: {self.arn(name)}")
        model.check_qualifier(qualifier or arn_qualifier, self.arn(name))
        return record

    def reservation(self, name: str) -> tuple[int | None, int]:
        record = self.store.functions.get(name)
        reserved = record["reserved"] if record is not None else None
        return reserved, self.reserved_total()

    def reserved_total(self) -> int:
        return sum(r["reserved"] or 0 for r in self.store.functions.values())

    def environment_for(self, record: Mapping[str, Any]) -> dict[str, str]:
        """What the handler's process sees: the user's variables, then the runtime's."""
        environment = dict(record.get("environment") or {})
        if self.credentials is not None:
            key_id, secret, token = self.credentials
        else:
            key_id, secret, token = DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY, None
        environment.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint_url,
                "AWS_ACCESS_KEY_ID": key_id,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_LAMBDA_FUNCTION_NAME": record["name"],
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(record["memory"]),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{record['name']}",
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{record['runtime']}",
                "_HANDLER": record["handler"],
                "TZ": ":UTC",
                "LANG": "en_US.UTF-8",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if token is not None:
            environment["AWS_SESSION_TOKEN"] = token
        return environment

    def spec_for(self, name: str) -> Any:
        """The sandbox spec of a function's current revision (built once per revision)."""
        record = self.store.functions.get(name)
        if record is None:
            raise ResourceNotFoundException(f"Function not found: {self.arn(name)}")
        cached = self._specs.get(name)
        if cached is not None and cached[0] == record["revision_id"]:
            return cached[1]
        code_dir = self.store.ensure_code_dir(name, record["code_sha256"])
        spec = self.pool_module.FunctionSpec(
            name=name,
            code_dir=code_dir,
            code_sha256=record["code_sha256"],
            handler=record["handler"],
            runtime=record["runtime"],
            memory_mb=record["memory"],
            timeout_seconds=float(record["timeout"]),
            environment=self.environment_for(record),
        )
        self._specs[name] = (record["revision_id"], spec)
        return spec

    async def _save(self) -> None:
        generation, data = self.store.catalog_snapshot()
        await asyncio.to_thread(self.store.write_catalog, generation, data)

    def configuration(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return model.configuration(record, self.region, self.account)

    # -- functions --------------------------------------------------------------------------

    async def create_function(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name, qualifier = model.parse_function_reference(
            body.get("FunctionName"), self.region, self.account
        )
        if qualifier is not None:
            raise InvalidParameterValueException(
                "Function name cannot contain a qualifier when creating a function."
            )
        if model.FUNCTION_NAME.fullmatch(name) is None:
            raise ValidationException(
                f"1 validation error detected: Value '{name}' at 'functionName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?"
                "(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
            )
        data = model.decode_zip(body.get("Code"))
        # Validate the configuration before spending time on the code.
        model.new_function(body, name, "00" * 32, len(data), self.clock())
        async with self._lock:
            if name in self.store.functions:
                raise ResourceConflictException(f"Function already exist: {name}")
            sha = await asyncio.to_thread(self.store.save_code, name, data)
            record = model.new_function(body, name, sha, len(data), self.clock())
            self.store.functions[name] = record
            await self._save()
        return self.configuration(record)

    def get_function(self, reference: Any, qualifier: str | None) -> dict[str, Any]:
        record = self.resolve(reference, qualifier)
        answer: dict[str, Any] = {
            "Configuration": self.configuration(record),
            "Code": {
                "RepositoryType": "S3",
                "Location": (
                    f"{self.endpoint_url}/2015-03-31/functions/{record['name']}/code"
                    f"?sha256={record['code_sha256']}"
                    f"&token={self.code_links.token(record['name'], record['code_sha256'])}"
                ),
            },
        }
        if record["reserved"] is not None:
            answer["Concurrency"] = {"ReservedConcurrentExecutions": record["reserved"]}
        if record.get("tags"):
            answer["Tags"] = dict(record["tags"])
        return answer

    def code_zip(self, reference: Any, sha256_hex: str, token: str) -> bytes:
        """The zip behind a code location GetFunction handed out (a link, like Lambda's
        presigned URL: its token is the authorization)."""
        record = self.resolve(reference)
        if sha256_hex != record["code_sha256"] or not self.code_links.valid(
            record["name"], sha256_hex, token
        ):
            raise ResourceNotFoundException(f"Function code not found: {self.arn(record['name'])}")
        return self.store.zip_path(record["code_sha256"]).read_bytes()

    def get_configuration(self, reference: Any, qualifier: str | None) -> dict[str, Any]:
        return self.configuration(self.resolve(reference, qualifier))

    def list_functions(self, marker: str | None, max_items: int | None) -> dict[str, Any]:
        names = sorted(self.store.functions)
        start = 0
        if marker:
            start = next((i for i, n in enumerate(names) if n > marker), len(names))
        limit = min(max_items or model.LIST_ITEMS_MAX, model.LIST_ITEMS_MAX)
        page = names[start : start + limit]
        answer: dict[str, Any] = {
            "Functions": [self.configuration(self.store.functions[n]) for n in page]
        }
        if start + limit < len(names):
            answer["NextMarker"] = page[-1]
        return answer

    async def update_code(self, reference: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        record = self.resolve(reference)
        data = model.decode_zip(body)
        if body.get("DryRun"):
            # Validate only: the answer is the configuration the update would produce.
            sha = hashlib.sha256(data).hexdigest()
            return self.configuration(dict(record, code_sha256=sha, code_size=len(data)))
        async with self._lock:
            record = self.resolve(reference)  # again: another update may have finished
            revision = body.get("RevisionId")
            if revision is not None and revision != record["revision_id"]:
                model.raise_revision_mismatch()
            sha = await asyncio.to_thread(self.store.save_code, record["name"], data)
            new = dict(record)
            new.update(
                code_sha256=sha,
                code_size=len(data),
                last_modified=model.timestamp(self.clock()),
                revision_id=model.new_revision(),
            )
            self.store.functions[record["name"]] = new
            await self._save()
            await asyncio.to_thread(self.store.drop_code, record["name"], sha)
        return self.configuration(new)

    async def update_configuration(self, reference: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        self.resolve(reference)
        async with self._lock:
            record = self.resolve(reference)  # again: another update may have finished
            new = model.updated_configuration(record, body, self.clock())
            self.store.functions[record["name"]] = new
            await self._save()
        return self.configuration(new)

    async def delete_function(self, reference: Any, qualifier: str | None) -> None:
        if qualifier == "$LATEST":
            raise InvalidParameterValueException(
                "$LATEST version cannot be deleted without deleting the function."
            )
        self.resolve(reference, qualifier)
        async with self._lock:
            record = self.resolve(reference, qualifier)
            del self.store.functions[record["name"]]
            await self._save()
            await asyncio.to_thread(self.store.drop_code, record["name"])

    # -- tags -------------------------------------------------------------------------------

    def _tagged(self, resource: str) -> dict[str, Any]:
        """The function a tagging request's ARN names (functions are the taggable resources
        here; a qualified ARN is refused as Lambda refuses it)."""
        match = model.FUNCTION_ARN.fullmatch(resource)
        if match is None:
            raise InvalidParameterValueException(f"Invalid function ARN: {resource}")
        if match.group("qualifier") is not None:
            raise InvalidParameterValueException(
                "Tags are not supported for function versions or aliases."
            )
        return self.resolve(resource)

    def list_tags(self, resource: str) -> dict[str, Any]:
        return {"Tags": dict(self._tagged(resource).get("tags") or {})}

    async def tag_resource(self, resource: str, body: Mapping[str, Any]) -> None:
        tags = body.get("Tags")
        if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            raise InvalidParameterValueException("Tags must be a map of strings to strings.")
        self._tagged(resource)
        async with self._lock:
            record = self._tagged(resource)
            merged = {**(record.get("tags") or {}), **tags}
            if len(merged) > model.TAGS_PER_RESOURCE_MAX:
                raise InvalidParameterValueException(
                    f"A resource may have at most {model.TAGS_PER_RESOURCE_MAX} tags."
                )
            self.store.functions[record["name"]] = dict(record, tags=merged)
            await self._save()

    async def untag_resource(self, resource: str, keys: list[str]) -> None:
        self._tagged(resource)
        async with self._lock:
            record = self._tagged(resource)
            left = {k: v for k, v in (record.get("tags") or {}).items() if k not in keys}
            self.store.functions[record["name"]] = dict(record, tags=left)
            await self._save()

    # -- invocation -------------------------------------------------------------------------

    async def invoke(self, reference: Any, qualifier: str | None, payload: bytes) -> Outcome:
        record = self.resolve(reference, qualifier)
        return await self.invoker.run(record["name"], payload)

    async def enqueue(self, reference: Any, qualifier: str | None, payload: bytes) -> None:
        """Accept an Event invocation: journaled (with a data directory) before it is
        acknowledged, so that a restart runs it rather than losing it."""
        record = self.resolve(reference, qualifier)
        self.invoker.check_room()
        event_id = str(uuid.uuid4())
        received = self.clock()
        await asyncio.to_thread(self.store.save_event, event_id, record["name"], received, payload)
        self.invoker.enqueue(record["name"], payload, event_id=event_id, received=received)

    # -- concurrency ------------------------------------------------------------------------

    async def put_concurrency(self, reference: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        record = self.resolve(reference)
        value = body.get("ReservedConcurrentExecutions")
        if value is None:
            raise InvalidParameterValueException(
                "1 validation error detected: Value null at 'reservedConcurrentExecutions' "
                "failed to satisfy constraint: Member must not be null"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{value}' at "
                "'reservedConcurrentExecutions' failed to satisfy constraint: Member must "
                "have value greater than or equal to 0"
            )
        async with self._lock:
            record = self.resolve(reference)
            others = self.reserved_total() - (record["reserved"] or 0)
            unreserved = self.invoker.concurrency.account_limit - others - value
            if unreserved < model.UNRESERVED_CONCURRENCY_MIN:
                raise InvalidParameterValueException(
                    "Specified ReservedConcurrentExecutions for function decreases account's "
                    "UnreservedConcurrentExecution below its minimum value of "
                    f"[{model.UNRESERVED_CONCURRENCY_MIN}]."
                )
            record = dict(record, reserved=value)
            self.store.functions[record["name"]] = record
            await self._save()
        return {"ReservedConcurrentExecutions": value}

    def get_concurrency(self, reference: Any) -> dict[str, Any]:
        record = self.resolve(reference)
        if record["reserved"] is None:
            return {}
        return {"ReservedConcurrentExecutions": record["reserved"]}

    async def delete_concurrency(self, reference: Any) -> None:
        self.resolve(reference)
        async with self._lock:
            record = self.resolve(reference)
            self.store.functions[record["name"]] = dict(record, reserved=None)
            await self._save()

    def account_settings(self) -> dict[str, Any]:
        limit = self.invoker.concurrency.account_limit
        return {
            "AccountLimit": {
                "TotalCodeSize": model.ACCOUNT_CODE_BYTES_MAX,
                "CodeSizeUnzipped": model.UNZIPPED_BYTES_MAX,
                "CodeSizeZipped": model.ZIP_BYTES_MAX,
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": limit - self.reserved_total(),
            },
            "AccountUsage": {
                "TotalCodeSize": sum(r["code_size"] for r in self.store.functions.values()),
                "FunctionCount": len(self.store.functions),
            },
            # Not a Lambda member (SDKs ignore it): which sandbox layers this host applies.
            "IsolationLayers": self.isolation_layers(),
        }

    # -- event source mappings --------------------------------------------------------------

    def mapping_configuration(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return model.mapping_configuration(record, self.region, self.account)

    async def _check_stream(self, stream_arn: str) -> None:
        """The stream must exist: asked of the Streams API (any stream of the table still
        readable counts), or of the table's LatestStreamArn where that API is not served."""
        match = model.parse_stream_arn(stream_arn)
        streams = self.streams_dispatch()
        try:
            if streams is not None:
                await streams("DescribeStream", {"StreamArn": stream_arn, "Limit": 1})
                return
            if self.database is None:
                return
            described = await self.database.dispatch(
                "DescribeTable", {"TableName": match.group("table")}
            )
        except Exception as error:
            if getattr(error, "type_name", "") not in (
                "ResourceNotFoundException",
                "ValidationException",
            ):
                raise
            raise InvalidParameterValueException(f"Stream not found: {stream_arn}") from None
        if described.get("Table", {}).get("LatestStreamArn") != stream_arn:
            raise InvalidParameterValueException(f"Stream not found: {stream_arn}")

    async def create_mapping(self, body: Mapping[str, Any]) -> dict[str, Any]:
        source = body.get("EventSourceArn")
        model.parse_stream_arn(source)
        record_fn = self.resolve(body.get("FunctionName"))
        await self._check_stream(source)
        async with self._lock:
            for other in self.store.mappings.values():
                if other["source"] == source and other["function"] == record_fn["name"]:
                    raise ResourceConflictException(
                        f'The event source arn (" {source} ") and function '
                        f'(" {record_fn["name"]} ") provided mapping already exists. Please '
                        f"update or delete the existing mapping with UUID {other['uuid']}"
                    )
            record = model.new_mapping(body, record_fn["name"], source, self.clock())
            self.store.mappings[record["uuid"]] = record
            answer = self.mapping_configuration(record)
            record["state"] = "Enabled" if record["enabled"] else "Disabled"
            await self._save()
        self._start_poller(record)
        return answer

    def get_mapping(self, uuid: str) -> dict[str, Any]:
        record = self.store.mappings.get(uuid)
        if record is None:
            raise ResourceNotFoundException("The resource you requested does not exist.")
        return self.mapping_configuration(record)

    def list_mappings(
        self,
        source: str | None,
        function: str | None,
        marker: str | None,
        max_items: int | None,
    ) -> dict[str, Any]:
        name = None
        if function is not None:
            name, _ = model.parse_function_reference(function, self.region, self.account)
        records = sorted(
            (
                r
                for r in self.store.mappings.values()
                if (source is None or r["source"] == source)
                and (name is None or r["function"] == name)
            ),
            key=lambda r: (r["created"], r["uuid"]),
        )
        start = 0
        if marker:
            start = next((i + 1 for i, r in enumerate(records) if r["uuid"] == marker), 0)
        limit = min(max_items or model.MAPPING_LIST_ITEMS_MAX, model.MAPPING_LIST_ITEMS_MAX)
        page = records[start : start + limit]
        answer: dict[str, Any] = {
            "EventSourceMappings": [self.mapping_configuration(r) for r in page]
        }
        if start + limit < len(records):
            answer["NextMarker"] = page[-1]["uuid"]
        return answer

    async def update_mapping(self, uuid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        record = self.store.mappings.get(uuid)
        if record is None:
            raise ResourceNotFoundException("The resource you requested does not exist.")
        if "FunctionName" in body and body["FunctionName"] is not None:
            function = self.resolve(body["FunctionName"])["name"]
        else:
            function = record["function"]
        async with self._lock:
            new = model.apply_mapping_update(record, body, self.clock())
            new["function"] = function
            new["state"] = "Updating"
            answer = self.mapping_configuration(new)
            new["state"] = "Enabled" if new["enabled"] else "Disabled"
            self.store.mappings[uuid] = new
            await self._save()
        poller = self.pollers.get(uuid)
        if poller is not None:
            poller.record = new
            poller.wake()
        return answer

    async def delete_mapping(self, uuid: str) -> dict[str, Any]:
        record = self.store.mappings.get(uuid)
        if record is None:
            raise ResourceNotFoundException("The resource you requested does not exist.")
        poller = self.pollers.pop(uuid, None)
        if poller is not None:
            await poller.stop()
        async with self._lock:
            self.store.mappings.pop(uuid, None)
            await self._save()
            await asyncio.to_thread(self.store.forget_positions, uuid)
        return self.mapping_configuration(dict(record, state="Deleting"))

    def _start_poller(self, record: dict[str, Any]) -> None:
        from keeldb.functions.poller import StreamPoller

        poller = StreamPoller(self, record)
        self.pollers[record["uuid"]] = poller
        poller.start()


def _records_waiter(database: Any) -> Any:
    """The engine's wait for new stream records, bound to the node's database."""
    try:
        from keeldb.engine.streams import wait_for_records
    except ImportError:
        return None

    async def wait(timeout_seconds: float) -> bool:
        return await wait_for_records(database, timeout_seconds)

    return wait


def first_credential(credentials: Mapping[str, Any] | None) -> tuple[str, str, str | None] | None:
    if not credentials:
        return None
    key_id = next(iter(credentials))
    credential = credentials[key_id]
    return credential.access_key_id, credential.secret_access_key, credential.session_token


async def attach(node: Node) -> Closer | None:
    """Start the function service and serve the Lambda API, unless functions are off."""
    if not node.config.functions:
        return None
    root = None if node.config.data_dir is None else Path(node.config.data_dir) / "functions"

    def streams() -> Any:
        service = node.server.json_services.get(STREAMS_TARGET)
        return service[0] if service is not None else None

    def build() -> FunctionService:
        return FunctionService(
            wait_for_records=_records_waiter(node.database),
            root=root,
            region=node.config.region,
            account=node.database.account_id,
            endpoint_url=node.url,
            endpoint_port=node.port,
            credentials=first_credential(node.config.credentials),
            database=node.database,
            streams=streams,
        )

    lazy = _StartedOnDemand(build, node.config.credentials)
    if root is not None:
        # Functions, mappings and queued events on disk must run again from the start.
        await lazy.started()
    # A node kept in memory has none: nothing (no directory, no pool) is made for functions
    # until the first Lambda request, so such a node touches no disk unless it is used.
    for prefix in LAMBDA_PATH_PREFIXES:
        node.server.mount(prefix, lazy.handle)
    return lazy.close


class _StartedOnDemand:
    """The service and its API, built and started by the first request or `started()`."""

    def __init__(self, build: Callable[[], FunctionService], credentials: Any) -> None:
        self._build = build
        self._credentials = credentials
        self._service: FunctionService | None = None
        self._api: Any = None
        self._lock = asyncio.Lock()

    async def started(self) -> Any:
        if self._api is None:
            async with self._lock:
                if self._api is None:
                    from keeldb.functions.rest import LambdaApi

                    service = self._build()
                    await service.start()
                    self._service = service
                    self._api = LambdaApi(service, credentials=self._credentials)
        return self._api

    async def handle(self, request: Request) -> RestResponse:
        api = await self.started()
        response: RestResponse = await api.handle(request)
        return response

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
