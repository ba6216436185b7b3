"""The cache of resolved expressions never changes an answer: compiling with a warm cache
(filled by a request with other values of the same types) gives what a cold cache gives,
tree, error and unused-placeholder check alike."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keeldb.expressions.context import RESOLVED_CACHE, ExpressionContext
from keeldb.model.errors import ValidationException

sys.path.insert(0, str(Path(__file__).parent))
from test_expressions_fuzz import NAMES, VALUES, texts

# The same placeholders with the same types and other contents: bounds swap order, strings
# and lists change, so that a check reading a value's contents would answer differently.
OTHER_VALUES: dict[str, Any] = {
    ":v": {"N": "2"},
    ":w": {"N": "1"},
    ":s": {"S": "N"},
    ":l": {"L": [{"S": "x"}, {"N": "3"}]},
}
KINDS = ("condition", "update", "projection", "key_condition", "filter")


def compile_outcome(kind: str, text: str, values: dict[str, Any]) -> Any:
    context = ExpressionContext(dict(NAMES), {k: dict(v) for k, v in values.items()})
    try:
        compiled = getattr(context, kind)(text)
    except ValidationException as error:
        return ("error", error.message)
    try:
        context.check_unused()
        unused = None
    except ValidationException as error:
        unused = error.message
    return ("ok", compiled, unused)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), texts)
def test_a_warm_cache_answers_as_a_cold_one(kind: str, text: str) -> None:
    RESOLVED_CACHE.clear()
    cold = compile_outcome(kind, text, OTHER_VALUES)
    RESOLVED_CACHE.clear()
    compile_outcome(kind, text, VALUES)  # fills the cache with the first values
    warm = compile_outcome(kind, text, OTHER_VALUES)
    assert warm == cold
    again = compile_outcome(kind, text, OTHER_VALUES)
    assert again == cold
