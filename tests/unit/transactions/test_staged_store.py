"""The staged view of a store answers as the store would after the staged writes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.engine.transactions import StagedStore
from keeldb.storage.memory import MemoryStore

keys = st.binary(min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(keys, st.binary(max_size=2), max_size=12),
    st.dictionaries(keys, st.one_of(st.none(), st.binary(max_size=2)), max_size=12),
    keys,
    st.one_of(st.none(), keys),
    st.booleans(),
)
def test_a_staged_scan_matches_the_written_store(
    base: dict[bytes, bytes],
    staged: dict[bytes, bytes | None],
    start: bytes,
    end: bytes | None,
    reverse: bool,
) -> None:
    store = MemoryStore()
    store.write(sorted(base.items()), [], applied_lsn=1)
    view = StagedStore(store)
    view.stage(
        [(k, v) for k, v in staged.items() if v is not None],
        [k for k, v in staged.items() if v is None],
    )
    expected = MemoryStore()
    expected.write(sorted(base.items()), [], applied_lsn=1)
    expected.write(*view.changes(), applied_lsn=2)
    assert list(view.scan(start, end, reverse=reverse)) == list(
        expected.scan(start, end, reverse=reverse)
    )
    for key in list(base) + list(staged):
        assert view.get(key) == expected.get(key)
