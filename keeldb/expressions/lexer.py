"""The lexer of DynamoDB expressions, and the syntax error DynamoDB reports.

It owns how text is cut into tokens and how a syntax error names its token and the text
near it. It never decides what a sequence of tokens means (that is `parser`).

DynamoDB's message for a syntax error is `Syntax error; token: "x", near: "a x b"`: the
offending token (or `<EOF>` at the end), and the text from the token before it to the token
after it, each side widened by one more token when the neighbour is whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keeldb.model.errors import ValidationException

# Token kinds.
IDENT = "ident"  # an attribute name, a keyword or a function name
NAME = "name"  # an expression attribute name placeholder: #name
VALUE = "value"  # an expression attribute value placeholder: :value
NUMBER = "number"  # a list index
PUNCT = "punct"  # ( ) [ ] , . = <> < <= > >= + -
SPACE = "space"
INVALID = "invalid"  # a character no token starts with

EOF_TEXT = "<EOF>"

# An attribute or function name written directly starts with a letter: DynamoDB's lexer
# reads "_abc" as the token "_" followed by "abc" (a syntax error), while placeholders
# (#name, :value) may start with any letter, digit or underscore.

_TOKEN_RE = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<ident>[A-Za-z][A-Za-z0-9_]*)
  | (?P<name>\#[A-Za-z0-9_]+)
  | (?P<value>:[A-Za-z0-9_]+)
  | (?P<number>[0-9]+)
  | (?P<punct><>|<=|>=|[()\[\],.=<>+\-])
  | (?P<invalid>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    index: int  # position in the full token list, whitespace included


def tokenize(text: str) -> list[Token]:
    """All tokens of `text`, whitespace included (syntax errors quote it)."""
    tokens: list[Token] = []
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        tokens.append(Token(kind, match.group(), len(tokens)))
    return tokens


class ExpressionSyntaxError(Exception):
    """Raised inside the parser; `near` is computed from the full token list."""

    def __init__(self, token: str, near: str, index: int) -> None:
        super().__init__(f'Syntax error; token: "{token}", near: "{near}"')
        self.token = token
        self.near = near
        self.index = index  # how far the parser got: the furthest failure wins

    @property
    def detail(self) -> str:
        return str(self)


def syntax_error_at(tokens: list[Token], index: int) -> ExpressionSyntaxError:
    """The syntax error for the token at `index` of the full list (len(tokens) is the end)."""
    if index >= len(tokens):
        before = _before(tokens, len(tokens))
        return ExpressionSyntaxError(EOF_TEXT, before, index)
    token = tokens[index]
    near = _before(tokens, index) + token.text + _after(tokens, index)
    return ExpressionSyntaxError(token.text, near, index)


def _before(tokens: list[Token], index: int) -> str:
    if index == 0:
        return ""
    previous = tokens[index - 1]
    if previous.kind == SPACE and index >= 2:
        return tokens[index - 2].text + previous.text
    return previous.text


def _after(tokens: list[Token], index: int) -> str:
    if index + 1 >= len(tokens):
        return ""
    following = tokens[index + 1]
    if following.kind == SPACE and index + 2 < len(tokens):
        return following.text + tokens[index + 2].text
    return following.text


def invalid(param: str, detail: str) -> ValidationException:
    """The ValidationException for a bad expression: "Invalid <param>: <detail>"."""
    return ValidationException(f"Invalid {param}: {detail}")
