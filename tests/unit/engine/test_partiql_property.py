"""SELECT against a plain reference: for random WHERE clauses (partition key equalities, IN
and OR, sort key ranges, filters) and random Limits, paging with NextToken returns exactly
the items a simple Python filter over all items returns, each once."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.engine.database import Database
from keeldb.storage.memory import MemoryLog, MemoryStore

ARTISTS = ("A", "B", "C")
SONGS_PER_ARTIST = 6
PAGES_MAX = 200  # a statement over 18 items with Limit >= 1 ends far sooner


def _build() -> tuple[Database, asyncio.AbstractEventLoop]:
    db = Database(MemoryStore())
    db.attach_log(MemoryLog(db.apply))
    loop = asyncio.new_event_loop()
    run = lambda op, body: loop.run_until_complete(db.dispatch(op, body))
    run(
        "CreateTable",
        {
            "TableName": "Music",
            "KeySchema": [
                {"AttributeName": "Artist", "KeyType": "HASH"},
                {"AttributeName": "Song", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "Artist", "AttributeType": "S"},
                {"AttributeName": "Song", "AttributeType": "N"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    for artist in ARTISTS:
        for song in range(SONGS_PER_ARTIST):
            item = {"Artist": {"S": artist}, "Song": {"N": str(song)}}
            if song % 3:
                item["mod"] = {"N": str(song % 3)}
            run("PutItem", {"TableName": "Music", "Item": item})
    return db, loop


DB, LOOP = _build()

ALL = [(a, s, (s % 3) if s % 3 else None) for a in ARTISTS for s in range(SONGS_PER_ARTIST)]


@st.composite
def where_clauses(draw: st.DrawFn) -> tuple[str, Any]:
    """A WHERE clause and the Python predicate over (artist, song, mod) it means."""
    artists = draw(st.lists(st.sampled_from(ARTISTS + ("Z",)), min_size=1, max_size=3))
    form = draw(st.sampled_from(["eq", "in", "or", "none"]))
    if form == "eq":
        text = f"Artist = '{artists[0]}'"
        wanted = {artists[0]}
    elif form == "in":
        text = "Artist IN [" + ", ".join(f"'{a}'" for a in artists) + "]"
        wanted = set(artists)
    elif form == "or":
        text = "(" + " OR ".join(f"Artist = '{a}'" for a in artists) + ")"
        wanted = set(artists)
    else:
        text = ""
        wanted = set(ARTISTS)
    low = draw(st.integers(0, SONGS_PER_ARTIST))
    high = draw(st.integers(0, SONGS_PER_ARTIST))
    song_form = draw(st.sampled_from(["none", "gt", "between", "le"]))
    terms = [text] if text else []
    if song_form == "gt":
        terms.append(f"Song > {low}")
    elif song_form == "between":
        terms.append(f"Song BETWEEN {low} AND {high}")
    elif song_form == "le":
        terms.append(f"{low} >= Song")
    filter_form = draw(st.sampled_from(["none", "missing", "mod"]))
    if filter_form == "missing":
        terms.append("mod IS MISSING")
    elif filter_form == "mod":
        terms.append("mod = 1")

    def predicate(artist: str, song: int, mod: int | None) -> bool:
        if artist not in wanted:
            return False
        if song_form == "gt" and not song > low:
            return False
        if song_form == "between" and not low <= song <= high:
            return False
        if song_form == "le" and not song <= low:
            return False
        if filter_form == "missing" and mod is not None:
            return False
        return not (filter_form == "mod" and mod != 1)

    return " AND ".join(terms), predicate


@settings(max_examples=150, deadline=None)
@given(where_clauses(), st.one_of(st.none(), st.integers(1, 7)))
def test_paged_select_returns_exactly_the_reference_items(where: Any, limit: int | None) -> None:
    text, predicate = where
    statement = "SELECT Artist, Song FROM Music" + (f" WHERE {text}" if text else "")
    body: dict[str, Any] = {"Statement": statement}
    if limit is not None:
        body["Limit"] = limit
    seen: list[tuple[str, int]] = []
    for _ in range(PAGES_MAX):
        answer = LOOP.run_until_complete(DB.dispatch("ExecuteStatement", body))
        if limit is not None:
            assert len(answer["Items"]) <= limit
        seen += [(i["Artist"]["S"], int(i["Song"]["N"])) for i in answer["Items"]]
        if "NextToken" not in answer:
            break
        body["NextToken"] = answer["NextToken"]
    else:
        raise AssertionError("paging did not end")
    expected = sorted((a, s) for a, s, m in ALL if predicate(a, s, m))
    assert sorted(seen) == expected
    assert len(seen) == len(set(seen))
