"""Recursive-descent parsers for condition, update and projection expressions.

It owns the grammar: which token sequences are expressions and the written tree (`ast`) they
become. It reports syntax errors exactly as DynamoDB does and notes redundant parentheses,
but never checks names, values, types or functions (that is `resolve`) and never evaluates.

Grammar (keywords are case-insensitive):

    condition  := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | "(" condition ")" | predicate
    predicate  := operand comparator operand
                | operand "BETWEEN" operand "AND" operand
                | operand "IN" "(" operand ("," operand)* ")"
                | function
    operand    := path | :value | function | "(" operand ")"
    function   := identifier "(" operand ("," operand)* ")"
    path       := (identifier | #name) ("." (identifier | #name) | "[" digits "]")*

    update     := clause+
    clause     := "SET" set ("," set)* | "REMOVE" path ("," path)*
                | "ADD" path :value ("," path :value)* | "DELETE" path :value (...)*
    set        := path "=" value
    value      := term (("+" | "-") term)?
    term       := path | :value | identifier "(" term ("," term)* ")" | "(" value ")"

    projection := path ("," path)*

NOT binds tighter than AND, which binds tighter than OR, as DynamoDB documents
("Comparison operator and function reference": precedence NOT, AND, OR).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from keeldb.expressions import ast
from keeldb.expressions.lexer import (
    IDENT,
    NAME,
    NUMBER,
    PUNCT,
    SPACE,
    VALUE,
    ExpressionSyntaxError,
    Token,
    syntax_error_at,
    tokenize,
)

T = TypeVar("T")

CONDITION_KEYWORDS = frozenset({"AND", "OR", "NOT", "BETWEEN", "IN"})
# How deeply parentheses and function calls may nest. Ours, not DynamoDB's: it keeps the
# recursion of this parser bounded (a 4 KB expression could otherwise nest 2000 levels).
NESTING_DEPTH_MAX = 100
# Written trees are immutable and depend on the text alone, so the trees of recently seen
# texts are kept: applications send the same few expressions over and over. Only texts that
# parse are kept (a syntax error is raised, never remembered).
PARSE_CACHE_ENTRIES_MAX = 1024


@dataclass(frozen=True)
class Parsed:
    """A written tree plus what the grammar noticed on the way (for the resolver)."""

    tree: ast.Node
    redundant_parentheses: bool = False


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.sig = [t for t in self.tokens if t.kind != SPACE]
        self.pos = 0
        # Spans (open, close) of parenthesised groups, in significant-token positions.
        self.groups: set[tuple[int, int]] = set()
        self.redundant = False
        self.depth = 0
        # Packrat memory: "(" starts both a group and an operand, and trying one and then the
        # other at every level would take time exponential in the nesting depth.
        self.memo: dict[tuple[str, int], tuple[object, int] | ExpressionSyntaxError] = {}

    # --- token helpers ---------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token | None:
        at = self.pos + ahead
        return self.sig[at] if at < len(self.sig) else None

    def fail(self) -> ExpressionSyntaxError:
        token = self.peek()
        return syntax_error_at(self.tokens, token.index if token else len(self.tokens))

    def at_punct(self, text: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token is not None and token.kind == PUNCT and token.text == text

    def at_keyword(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == IDENT and token.text.upper() == word

    def expect_punct(self, text: str) -> None:
        if not self.at_punct(text):
            raise self.fail()
        self.pos += 1

    def expect_end(self) -> None:
        if self.peek() is not None:
            raise self.fail()

    def note_group(self, open_at: int, close_at: int) -> None:
        if (open_at + 1, close_at - 1) in self.groups:
            self.redundant = True
        self.groups.add((open_at, close_at))

    # --- paths -------------------------------------------------------------------------------

    def path(self, *, keywords: frozenset[str] = frozenset()) -> ast.Path:
        token = self.peek()
        if token is None or token.kind not in (IDENT, NAME):
            raise self.fail()
        if token.kind == IDENT and token.text.upper() in keywords:
            raise self.fail()
        self.pos += 1
        parts: list[ast.PathPart] = [token.text]
        while True:
            if self.at_punct("."):
                self.pos += 1
                token = self.peek()
                if token is None or token.kind not in (IDENT, NAME):
                    raise self.fail()
                self.pos += 1
                parts.append(token.text)
            elif self.at_punct("["):
                self.pos += 1
                token = self.peek()
                if token is None or token.kind != NUMBER:
                    raise self.fail()
                self.pos += 1
                self.expect_punct("]")
                parts.append(int(token.text))
            else:
                return ast.Path(tuple(parts))

    # --- conditions --------------------------------------------------------------------------

    def _memoized(self, rule: str, parse: Callable[[], T]) -> T:
        key = (rule, self.pos)
        known = self.memo.get(key)
        if isinstance(known, ExpressionSyntaxError):
            raise known
        if known is not None:
            result, self.pos = known
            return result  # type: ignore[return-value]
        self.depth += 1
        try:
            if self.depth > NESTING_DEPTH_MAX:
                raise self.fail()
            result = parse()
        except ExpressionSyntaxError as error:
            self.memo[key] = error
            raise
        finally:
            self.depth -= 1
        self.memo[key] = (result, self.pos)
        return result

    def condition(self) -> ast.Condition:
        return self._memoized("condition", self._condition)

    def _condition(self) -> ast.Condition:
        left = self.conjunction()
        while self.at_keyword("OR"):
            self.pos += 1
            left = ast.Or(left, self.conjunction())
        return left

    def conjunction(self) -> ast.Condition:
        left = self.negation()
        while self.at_keyword("AND"):
            self.pos += 1
            left = ast.And(left, self.negation())
        return left

    def negation(self) -> ast.Condition:
        nots = 0
        while self.at_keyword("NOT"):
            nots += 1
            if nots > NESTING_DEPTH_MAX:
                raise self.fail()
            self.pos += 1
        inner = self._negated()
        for _ in range(nots):
            inner = ast.Not(inner)
        return inner

    def _negated(self) -> ast.Condition:
        if self.at_punct("("):
            start = self.pos
            try:
                self.pos += 1
                inner = self.condition()
                self.expect_punct(")")
                if self._at_predicate_operator():
                    # "(a) = :v": the group was an operand; parse it as one.
                    raise self.fail()
                self.note_group(start, self.pos - 1)
                return inner
            except ExpressionSyntaxError as group_error:
                self.pos = start
                try:
                    return self.predicate()
                except ExpressionSyntaxError as predicate_error:
                    # As a PEG parser does, report the failure that got furthest.
                    if group_error.index > predicate_error.index:
                        raise group_error from None
                    raise
        return self.predicate()

    def _at_predicate_operator(self) -> bool:
        token = self.peek()
        if token is None:
            return False
        if token.kind == PUNCT and token.text in ast.COMPARATORS:
            return True
        return token.kind == IDENT and token.text.upper() in ("BETWEEN", "IN")

    def predicate(self) -> ast.Condition:
        left = self.operand()
        token = self.peek()
        if token is not None and token.kind == PUNCT and token.text in ast.COMPARATORS:
            self.pos += 1
            return ast.Compare(token.text, left, self.operand())
        if self.at_keyword("BETWEEN"):
            self.pos += 1
            low = self.operand()
            if not self.at_keyword("AND"):
                raise self.fail()
            self.pos += 1
            return ast.Between(left, low, self.operand())
        if self.at_keyword("IN"):
            self.pos += 1
            self.expect_punct("(")
            options = [self.operand()]
            while self.at_punct(","):
                self.pos += 1
                options.append(self.operand())
            self.expect_punct(")")
            return ast.In(left, tuple(options))
        if isinstance(left, ast.Function):
            return left
        raise self.fail()

    def operand(self) -> ast.Operand:
        return self._memoized("operand", self._operand)

    def _operand(self) -> ast.Operand:
        token = self.peek()
        if token is None:
            raise self.fail()
        if token.kind == VALUE:
            self.pos += 1
            return ast.ValueRef(token.text)
        if token.kind == IDENT and self.at_punct("(", 1):
            if token.text.upper() in CONDITION_KEYWORDS:
                raise self.fail()
            self.pos += 2
            args = [self.operand()]
            while self.at_punct(","):
                self.pos += 1
                args.append(self.operand())
            self.expect_punct(")")
            return ast.Function(token.text, tuple(args))
        if token.kind == PUNCT and token.text == "(":
            start = self.pos
            self.pos += 1
            inner = self.operand()
            self.expect_punct(")")
            self.note_group(start, self.pos - 1)
            return inner
        return self.path(keywords=CONDITION_KEYWORDS)

    # --- updates -----------------------------------------------------------------------------

    def update(self) -> ast.UpdateExpression:
        clauses: list[ast.UpdateClause] = []
        while True:
            token = self.peek()
            if token is None and clauses:
                return ast.UpdateExpression(tuple(clauses))
            if token is None or token.kind != IDENT or token.text.upper() not in ast.CLAUSE_KINDS:
                raise self.fail()
            kind = token.text.upper()
            self.pos += 1
            actions = [self.action(kind)]
            while self.at_punct(","):
                self.pos += 1
                actions.append(self.action(kind))
            clauses.append(ast.UpdateClause(kind, tuple(actions)))

    def action(self, kind: str) -> ast.Action:
        path = self.path()
        if kind == "SET":
            self.expect_punct("=")
            return ast.SetAction(path, self.set_value())
        if kind == "REMOVE":
            return ast.RemoveAction(path)
        token = self.peek()
        if token is None or token.kind != VALUE:
            raise self.fail()
        self.pos += 1
        if kind == "ADD":
            return ast.AddAction(path, ast.ValueRef(token.text))
        assert kind == "DELETE", kind
        return ast.DeleteAction(path, ast.ValueRef(token.text))

    def set_value(self) -> ast.Operand:
        left = self.term()
        token = self.peek()
        if token is not None and token.kind == PUNCT and token.text in ("+", "-"):
            self.pos += 1
            op: ast.ArithmeticOp = "+" if token.text == "+" else "-"
            return ast.Arithmetic(op, left, self.term())
        return left

    def term(self) -> ast.Operand:
        self.depth += 1
        try:
            if self.depth > NESTING_DEPTH_MAX:
                raise self.fail()
            return self._term()
        finally:
            self.depth -= 1

    def _term(self) -> ast.Operand:
        token = self.peek()
        if token is None:
            raise self.fail()
        if token.kind == VALUE:
            self.pos += 1
            return ast.ValueRef(token.text)
        if token.kind == IDENT and self.at_punct("(", 1):
            self.pos += 2
            args = [self.term()]
            while self.at_punct(","):
                self.pos += 1
                args.append(self.term())
            self.expect_punct(")")
            return ast.Function(token.text, tuple(args))
        if token.kind == PUNCT and token.text == "(":
            start = self.pos
            self.pos += 1
            inner = self.set_value()
            self.expect_punct(")")
            self.note_group(start, self.pos - 1)
            return inner
        return self.path()

    # --- projections -------------------------------------------------------------------------

    def projection(self) -> ast.ProjectionExpression:
        paths = [self.path()]
        while self.at_punct(","):
            self.pos += 1
            paths.append(self.path())
        return ast.ProjectionExpression(tuple(paths))


def _parse(text: str, rule: Callable[[_Parser], Any]) -> Parsed:
    """Parse the whole of `text` with one grammar rule."""
    parser = _Parser(text)
    tree = rule(parser)
    parser.expect_end()
    return Parsed(tree, parser.redundant)


@lru_cache(maxsize=PARSE_CACHE_ENTRIES_MAX)
def parse_condition(text: str) -> Parsed:
    """The written tree of a condition (also a filter or a key condition)."""
    return _parse(text, _Parser.condition)


@lru_cache(maxsize=PARSE_CACHE_ENTRIES_MAX)
def parse_update(text: str) -> Parsed:
    return _parse(text, _Parser.update)


@lru_cache(maxsize=PARSE_CACHE_ENTRIES_MAX)
def parse_projection(text: str) -> Parsed:
    return _parse(text, _Parser.projection)
