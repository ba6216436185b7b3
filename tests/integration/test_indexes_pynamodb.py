"""PynamoDB models with a local and a global secondary index against the real server: the
model creates its table with the indexes, saves, updates and deletes items, and queries and
scans through the indexes."""

from __future__ import annotations

import uuid
from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.indexes import (
    AllProjection,
    GlobalSecondaryIndex,
    KeysOnlyProjection,
    LocalSecondaryIndex,
)
from pynamodb.models import Model


def _models(endpoint: str, table: str) -> Any:
    class Connection:
        host = endpoint
        region = "us-east-1"
        aws_access_key_id = "AKIDKEELDBTEST"
        aws_secret_access_key = "keeldb-test-secret"
        max_retry_attempts = 0

    class ByScore(LocalSecondaryIndex["Game"]):
        class Meta(Connection):
            index_name = "by_score"
            projection = KeysOnlyProjection()

        player = UnicodeAttribute(hash_key=True)
        score = NumberAttribute(range_key=True)

    class ByLevel(GlobalSecondaryIndex["Game"]):
        class Meta(Connection):
            index_name = "by_level"
            projection = AllProjection()
            billing_mode = "PAY_PER_REQUEST"

        level = UnicodeAttribute(hash_key=True)
        score = NumberAttribute(range_key=True)

    class Game(Model):
        class Meta(Connection):
            table_name = table
            billing_mode = "PAY_PER_REQUEST"

        player = UnicodeAttribute(hash_key=True)
        game = UnicodeAttribute(range_key=True)
        score = NumberAttribute()
        level = UnicodeAttribute(null=True)
        by_score = ByScore()
        by_level = ByLevel()

    return Game


def test_pynamodb_models_query_local_and_global_indexes(endpoint: str) -> None:
    game = _models(endpoint, f"games-{uuid.uuid4().hex[:12]}")
    game.create_table(wait=True)
    try:
        for i in range(12):
            level = None if i % 4 == 3 else f"L{i % 2}"
            game(f"p{i % 3}", f"g{i:02}", score=100 - i, level=level).save()
        scores = [g.score for g in game.by_score.query("p0")]
        assert scores == [91, 94, 97, 100]
        assert [g.game for g in game.by_score.query("p1", game.score > 95)] == ["g04", "g01"]
        level_zero = list(game.by_level.query("L0", scan_index_forward=False))
        assert [g.score for g in level_zero] == [100, 98, 96, 94, 92, 90]
        assert all(g.player for g in level_zero)  # ALL projection: the whole item
        # Items without a level are left out of the global index (sparse).
        assert game.by_level.count("L1") == len([i for i in range(1, 12, 2) if i % 4 != 3])
        assert sorted(g.game for g in game.by_level.scan()) == sorted(
            f"g{i:02}" for i in range(12) if i % 4 != 3
        )
        # An update moves the item between index partitions; a delete removes it.
        first = game.get("p0", "g00")
        first.update(actions=[game.level.set("L1")])
        game.get("p2", "g02").delete()
        assert [g.game for g in game.by_level.query("L0")] == ["g10", "g08", "g06", "g04"]
        assert "g00" in [g.game for g in game.by_level.query("L1")]
    finally:
        game.delete_table()
