"""The YCSB-style workloads of `keeldb bench`: key choice, records and request bodies.

Owns: what each phase sends (the tables, the records, the operation mix, the zipfian key
choice of YCSB's ScrambledZipfianGenerator) as ready-to-send DynamoDB JSON bodies, and the
logical size of what each write stores. The same definitions as the reference driver of the
peers' side-by-side runs, so that the two agree: table "usertable" (hash key "key", S) with
records "user<n>" of FIELD_COUNT fields "field0".. of FIELD_BYTES characters, and table
"querytable" (hash "pk", range "sk") with QUERY_PARTITIONS partitions of
QUERY_ITEMS_PER_PARTITION items, loaded 25 at a time with BatchWriteItem.

It must never do IO or read clocks: randomness is the `random.Random` it is given, so a seed
replays the same requests.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass

USER_TABLE = "usertable"
QUERY_TABLE = "querytable"
FIELD_COUNT = 10
FIELD_BYTES = 100
QUERY_PARTITIONS = 200
QUERY_ITEMS_PER_PARTITION = 100
QUERY_LIMIT = 10
# BatchWriteItem takes at most 25 requests (DynamoDB's limit).
BATCH_ITEMS_MAX = 25

LOAD_PHASES = ("load", "batchload")
# "qget" (GetItem of one querytable item: zipfian partition, uniform item) is not one of the
# issue's workloads; it measures point reads on a table loaded with batchload alone, as the
# scale run does.
RUN_PHASES = ("a", "b", "c", "query", "qget")
PHASES = LOAD_PHASES + RUN_PHASES
# The share of reads (GetItem) in the YCSB core workloads; the rest are UpdateItem.
READ_SHARE = {"a": 0.50, "b": 0.95, "c": 1.00}

# YCSB's ScrambledZipfianGenerator draws from a zipfian over 10^10 items with theta 0.99 and
# a precomputed zeta, then hashes the draw (FNV-1a, 64 bits) onto the key space, so that the
# hot keys are scattered rather than clustered at the low numbers.
ZIPF_THETA = 0.99
ZIPF_ITEMS = 10_000_000_000
ZIPF_ZETA = 26.46902820178302  # zeta(ZIPF_ITEMS, 0.99), as YCSB hard-codes it
_FNV_OFFSET_64 = 0xCBF29CE484222325
_FNV_PRIME_64 = 0x100000001B3
_MASK_64 = (1 << 64) - 1
# Field values are slices of one random pool, so that making a record costs no randomness
# per character.
_POOL_CHARS = 65536
_ALPHANUMERIC = string.ascii_letters + string.digits

# The operations a phase sends, as indexes into OPERATIONS (kept small for the workers).
OPERATIONS = ("PutItem", "BatchWriteItem", "GetItem", "UpdateItem", "Query")
PUT, BATCH, GET, UPDATE, QUERY = range(len(OPERATIONS))


def fnv_hash_64(value: int) -> int:
    """YCSB's `Utils.fnvhash64`: FNV-1a over the 8 low bytes, read as a signed Java long and
    made non-negative."""
    hashed = _FNV_OFFSET_64
    for _ in range(8):
        hashed ^= value & 0xFF
        value >>= 8
        hashed = (hashed * _FNV_PRIME_64) & _MASK_64
    if hashed >= 1 << 63:
        hashed -= 1 << 64
    return abs(hashed)


class Zipfian:
    """Gray et al., "Quickly generating billion-record synthetic databases" (SIGMOD 1994),
    as YCSB's ZipfianGenerator: draws 0..items-1, 0 the most popular."""

    __slots__ = ("_alpha", "_eta", "_half_pow", "_items", "_random", "_zeta")

    def __init__(self, items: int, rng: random.Random, theta: float = ZIPF_THETA) -> None:
        assert items >= 2
        assert 0 < theta < 1
        self._items = items
        self._random = rng.random
        if items == ZIPF_ITEMS and theta == ZIPF_THETA:
            self._zeta = ZIPF_ZETA
        else:
            self._zeta = math.fsum(1.0 / (i**theta) for i in range(1, items + 1))
        self._alpha = 1.0 / (1.0 - theta)
        self._half_pow = 1.0 + 0.5**theta
        zeta_2 = self._half_pow
        self._eta = (1.0 - (2.0 / items) ** (1.0 - theta)) / (1.0 - zeta_2 / self._zeta)

    def next(self) -> int:
        u = self._random()
        uz = u * self._zeta
        if uz < 1.0:
            return 0
        if uz < self._half_pow:
            return 1
        drawn = int(self._items * (self._eta * u - self._eta + 1.0) ** self._alpha)
        return min(drawn, self._items - 1)


class ScrambledZipfian:
    """YCSB's ScrambledZipfianGenerator over 0..keys-1."""

    __slots__ = ("_keys", "_zipfian")

    def __init__(self, keys: int, rng: random.Random) -> None:
        assert keys >= 1
        self._keys = keys
        self._zipfian = Zipfian(ZIPF_ITEMS, rng)

    def next(self) -> int:
        return fnv_hash_64(self._zipfian.next()) % self._keys


class Uniform:
    __slots__ = ("_keys", "_randrange")

    def __init__(self, keys: int, rng: random.Random) -> None:
        assert keys >= 1
        self._keys = keys
        self._randrange = rng.randrange

    def next(self) -> int:
        return self._randrange(self._keys)


DISTRIBUTIONS = ("zipfian", "uniform")


def key_chooser(distribution: str, keys: int, rng: random.Random) -> ScrambledZipfian | Uniform:
    if distribution == "zipfian":
        return ScrambledZipfian(keys, rng)
    if distribution == "uniform":
        return Uniform(keys, rng)
    raise ValueError(f"unknown key distribution {distribution!r}")


@dataclass(frozen=True, slots=True)
class Shape:
    """The size of the data set and of its records."""

    records: int = 20_000
    field_count: int = FIELD_COUNT
    field_bytes: int = FIELD_BYTES
    partitions: int = QUERY_PARTITIONS
    items_per_partition: int = QUERY_ITEMS_PER_PARTITION
    query_limit: int = QUERY_LIMIT
    distribution: str = "zipfian"
    consistent_read: bool = False

    def record_bytes(self, key: str, key_name: str = "key") -> int:
        """DynamoDB's size of one record: attribute names plus values (strings: UTF-8)."""
        fields = sum(len(f"field{i}") for i in range(self.field_count))
        return len(key_name) + len(key) + fields + self.field_count * self.field_bytes


def user_key(number: int) -> str:
    return f"user{number}"


def partition_key(number: int) -> str:
    return f"part{number}"


def sort_key(number: int) -> str:
    return f"item{number:05d}"


class Bodies:
    """Request bodies for one worker; `rng` picks field values and updated fields."""

    def __init__(self, shape: Shape, rng: random.Random) -> None:
        self.shape = shape
        self._rng = rng
        self._pool = "".join(rng.choices(_ALPHANUMERIC, k=_POOL_CHARS + shape.field_bytes))
        self._consistent = "true" if shape.consistent_read else "false"

    def _value(self) -> str:
        start = self._rng.randrange(_POOL_CHARS)
        return self._pool[start : start + self.shape.field_bytes]

    def _fields(self) -> str:
        return ",".join(
            f'"field{i}":{{"S":"{self._value()}"}}' for i in range(self.shape.field_count)
        )

    def put(self, number: int) -> bytes:
        return (
            f'{{"TableName":"{USER_TABLE}","Item":{{"key":{{"S":"{user_key(number)}"}},'
            f"{self._fields()}}}}}"
        ).encode()

    def get(self, number: int) -> bytes:
        return (
            f'{{"TableName":"{USER_TABLE}","Key":{{"key":{{"S":"{user_key(number)}"}}}},'
            f'"ConsistentRead":{self._consistent}}}'
        ).encode()

    def update(self, number: int) -> bytes:
        field = self._rng.randrange(self.shape.field_count)
        return (
            f'{{"TableName":"{USER_TABLE}","Key":{{"key":{{"S":"{user_key(number)}"}}}},'
            f'"UpdateExpression":"SET #f = :v","ExpressionAttributeNames":{{"#f":"field{field}"}},'
            f'"ExpressionAttributeValues":{{":v":{{"S":"{self._value()}"}}}}}}'
        ).encode()

    def query(self, partition: int) -> bytes:
        return (
            f'{{"TableName":"{QUERY_TABLE}","KeyConditionExpression":"pk = :p",'
            f'"ExpressionAttributeValues":{{":p":{{"S":"{partition_key(partition)}"}}}},'
            f'"Limit":{self.shape.query_limit},"ConsistentRead":{self._consistent}}}'
        ).encode()

    def get_query_item(self, partition: int, number: int) -> bytes:
        return (
            f'{{"TableName":"{QUERY_TABLE}","Key":{{"pk":{{"S":"{partition_key(partition)}"}},'
            f'"sk":{{"S":"{sort_key(number)}"}}}},"ConsistentRead":{self._consistent}}}'
        ).encode()

    def batch_put(self, pairs: Sequence[tuple[int, int]]) -> bytes:
        assert 0 < len(pairs) <= BATCH_ITEMS_MAX
        requests = ",".join(
            f'{{"PutRequest":{{"Item":{{"pk":{{"S":"{partition_key(p)}"}},'
            f'"sk":{{"S":"{sort_key(i)}"}},{self._fields()}}}}}}}'
            for p, i in pairs
        )
        return f'{{"RequestItems":{{"{QUERY_TABLE}":[{requests}]}}}}'.encode()


def create_table_requests() -> list[dict[str, object]]:
    """CreateTable requests for the two tables (on-demand billing)."""
    return [
        {
            "TableName": USER_TABLE,
            "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
        {
            "TableName": QUERY_TABLE,
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
    ]


def load_keys(shape: Shape, worker: int, workers: int, seed: int) -> list[int]:
    """This worker's share of the records to load, in a seeded shuffled order (YCSB's
    hashed insert order), so that the workers together load every record once."""
    assert 0 <= worker < workers
    keys = list(range(shape.records))
    random.Random(seed).shuffle(keys)
    return keys[worker::workers]


def batch_pairs(shape: Shape, worker: int, workers: int) -> list[list[tuple[int, int]]]:
    """This worker's BatchWriteItem requests: its partitions' items, 25 per request."""
    assert 0 <= worker < workers
    pairs = [
        (p, i)
        for p in range(worker, shape.partitions, workers)
        for i in range(shape.items_per_partition)
    ]
    return [pairs[i : i + BATCH_ITEMS_MAX] for i in range(0, len(pairs), BATCH_ITEMS_MAX)]


class Mix:
    """The next operation of a run phase: (operation, body, logical bytes written)."""

    def __init__(self, phase: str, shape: Shape, rng: random.Random) -> None:
        assert phase in RUN_PHASES, phase
        self._phase = phase
        self._bodies = Bodies(shape, rng)
        self._random = rng.random
        keys = shape.partitions if phase in ("query", "qget") else shape.records
        self._keys = key_chooser(shape.distribution, keys, rng)
        self._items_per_partition = shape.items_per_partition
        self._randrange = rng.randrange
        self._read_share = READ_SHARE.get(phase, 1.0)
        # An update rewrites the whole item (DynamoDB meters writes by the item's size).
        self._update_bytes = shape.record_bytes(user_key(shape.records // 2))

    def next(self) -> tuple[int, bytes, int]:
        key = self._keys.next()
        if self._phase == "query":
            return QUERY, self._bodies.query(key), 0
        if self._phase == "qget":
            number = self._randrange(self._items_per_partition)
            return GET, self._bodies.get_query_item(key, number), 0
        if self._read_share >= 1.0 or self._random() < self._read_share:
            return GET, self._bodies.get(key), 0
        return UPDATE, self._bodies.update(key), self._update_bytes
