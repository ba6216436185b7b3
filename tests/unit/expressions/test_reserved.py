"""The reserved-word list is AWS's list, looked up without regard to case."""

from __future__ import annotations

from keeldb.expressions.reserved import RESERVED_WORDS, RESERVED_WORDS_COUNT, is_reserved


def test_the_list_has_every_word_of_the_aws_page() -> None:
    assert len(RESERVED_WORDS) == RESERVED_WORDS_COUNT
    assert {"ABORT", "BETWEEN", "NAME", "SIZE", "STATUS", "ZONE"} <= RESERVED_WORDS


def test_reserved_words_are_recognised_in_any_case() -> None:
    assert is_reserved("name")
    assert is_reserved("Status")
    assert is_reserved("TTL")


def test_ordinary_names_are_not_reserved() -> None:
    assert not is_reserved("pk")
    assert not is_reserved("username")
    assert not is_reserved("name_")
