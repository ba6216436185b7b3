"""The PartiQL statements DynamoDB accepts, parsed into a small AST.

It owns the statement grammar of PartiQL for DynamoDB (Developer Guide, "PartiQL select /
insert / update / delete statements for DynamoDB"): one SELECT, INSERT, UPDATE or DELETE on
one table (or, for SELECT, one `"table"."index"`), PartiQL literals ('strings', numbers,
TRUE/FALSE, NULL, {'k': v} structs, [..] lists, <<..>> bags as sets) and `?` parameters,
which are bound here, in order, from the request's Parameters. A malformed statement is a
ValidationException with DynamoDB's wording ("Statement wasn't well formed, can't be
processed: ...").

It never looks at a table, never evaluates a condition and never does IO: `translate`
turns the AST into DynamoDB requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from keeldb.model.errors import ValidationException

AttributeValue = dict[str, Any]

STATEMENT_CHARS_MAX = 8192  # ExecuteStatement API reference: Statement length 1..8192
NESTING_DEPTH_MAX = 32  # values and conditions nest at most this deep (DynamoDB: 32 levels)

PARAMETER_COUNT_MESSAGE = "Number of parameters in request and statement don't match."
MALFORMED = "Statement wasn't well formed, can't be processed: "
EXISTS_MESSAGE = "EXISTS can only be used in ExecuteTransaction write requests."
STAR_AND_OTHERS_MESSAGE = (
    "Other attributes should not be present in the projection when '*' is used."
)
INSERT_RETURNING_MESSAGE = "RETURNING is not supported in INSERT"
DML_FROM_MESSAGE = (
    "FROM clause may only contain a single table name in data manipulation statements"
)
ALIAS_MESSAGE = "Aliasing is not supported"
BAG_TYPES_MESSAGE = (
    "Unsupported data type in Bag. DynamoDB only supports either numbers or strings in bags"
)
MISSING_COMPARED_MESSAGE = "MISSING must be compared using IS operator"

# IS [NOT] <type>: the PartiQL type names DynamoDB supports, with the DynamoDB type each
# stands for (MISSING is absence, handled apart).
IS_TYPES = {
    "NULL": "NULL",
    "BOOLEAN": "BOOL",
    "BOOL": "BOOL",
    "BLOB": "B",
    "STRING": "S",
    "NUMERIC": "N",
    "NUMBER": "N",
    "STRUCT": "M",
    "TUPLE": "M",
    "LIST": "L",
}
COMPARISONS = ("=", "<>", "!=", "<", "<=", ">", ">=")
RETURNING_MODES = {
    ("ALL", "OLD"): "ALL_OLD",
    ("MODIFIED", "OLD"): "UPDATED_OLD",
    ("ALL", "NEW"): "ALL_NEW",
    ("MODIFIED", "NEW"): "UPDATED_NEW",
}


def malformed(detail: str) -> ValidationException:
    return ValidationException(MALFORMED + detail)


# --- AST ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Path:
    """An attribute and its document path: ("a", "b", 0) is a.b[0]."""

    parts: tuple[str | int, ...]

    @property
    def name(self) -> str:
        return str(self.parts[0])

    def __str__(self) -> str:
        out = self.name
        for part in self.parts[1:]:
            out += f"[{part}]" if isinstance(part, int) else f".{part}"
        return out


@dataclass(frozen=True, slots=True)
class Literal:
    """A value, literal or bound parameter, as a DynamoDB AttributeValue."""

    value: AttributeValue


@dataclass(frozen=True, slots=True)
class Call:
    """A function in an operand position: size(a), list_append(a, b), set_add(a, b) ..."""

    name: str  # lower case
    args: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class Arithmetic:
    op: str  # "+" or "-"
    left: Operand
    right: Operand


Operand = Path | Literal | Call | Arithmetic


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # one of COMPARISONS, "!=" normalised to "<>"
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class Between:
    operand: Operand
    low: Operand
    high: Operand


@dataclass(frozen=True, slots=True)
class In:
    operand: Operand
    values: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class Is:
    """`path IS [NOT] MISSING | NULL | STRING ...`; type_name "MISSING" or an IS_TYPES key."""

    path: Path
    type_name: str
    negated: bool


@dataclass(frozen=True, slots=True)
class Function:
    """A boolean function: begins_with, contains, attribute_type, attribute_exists ..."""

    name: str  # lower case
    args: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class And:
    left: Condition
    right: Condition


@dataclass(frozen=True, slots=True)
class Or:
    left: Condition
    right: Condition


@dataclass(frozen=True, slots=True)
class Not:
    operand: Condition


Condition = Compare | Between | In | Is | Function | And | Or | Not


@dataclass(frozen=True, slots=True)
class Select:
    table: str
    index: str | None
    projection: tuple[Path, ...] | None  # None: *
    where: Condition | None
    order_by: tuple[tuple[Path, bool], ...] = ()  # (path, descending)


@dataclass(frozen=True, slots=True)
class Insert:
    table: str
    item: dict[str, AttributeValue]


@dataclass(frozen=True, slots=True)
class UpdateAction:
    kind: str  # "SET" or "REMOVE"
    path: Path
    value: Operand | None = None


@dataclass(frozen=True, slots=True)
class Update:
    table: str
    actions: tuple[UpdateAction, ...]
    where: Condition | None
    returning: str | None  # a ReturnValues mode


@dataclass(frozen=True, slots=True)
class Delete:
    table: str
    where: Condition | None
    returning: str | None


Statement = Select | Insert | Update | Delete


# --- Lexer ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "ident", "quoted", "string", "number", "param", "punct", "end"
    text: str
    position: int

    def is_keyword(self, word: str) -> bool:
        return self.kind == "ident" and self.text.upper() == word


_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+|--[^\n]*|/\*.*?\*/)
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<ident>[A-Za-z_$][A-Za-z0-9_$]*)
    | (?P<quoted>"(?:[^"]|"")*")
    | (?P<string>'(?:[^']|'')*')
    | (?P<param>\?)
    | (?P<punct><<|>>|<=|>=|<>|!=|\|\||[()\[\]{},.:;*=<>+\-])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise malformed(f"Unexpected character '{text[position]}' at position {position}")
        kind = match.lastgroup
        assert kind is not None
        raw = match.group()
        if kind == "quoted":
            tokens.append(Token(kind, raw[1:-1].replace('""', '"'), position))
        elif kind == "string":
            tokens.append(Token(kind, raw[1:-1].replace("''", "'"), position))
        elif kind != "space":
            tokens.append(Token(kind, raw, position))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# --- Parser ---------------------------------------------------------------------------------


@dataclass
class _Parser:
    tokens: list[Token]
    parameters: list[AttributeValue]
    position: int = 0
    used_parameters: int = 0
    depth: int = 0

    # Token helpers.

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.position + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.position += 1
        return token

    def fail(self, token: Token | None = None) -> ValidationException:
        token = token or self.peek()
        if token.kind == "end":
            return malformed("Unexpected end of statement")
        return malformed(f"Unexpected token '{token.text}' at position {token.position}")

    def accept_keyword(self, *words: str) -> bool:
        for offset, word in enumerate(words):
            if not self.peek(offset).is_keyword(word):
                return False
        self.position += len(words)
        return True

    def expect_keyword(self, word: str) -> None:
        if not self.accept_keyword(word):
            raise self.fail()

    def accept_punct(self, text: str) -> bool:
        token = self.peek()
        if token.kind == "punct" and token.text == text:
            self.position += 1
            return True
        return False

    def expect_punct(self, text: str) -> None:
        if not self.accept_punct(text):
            raise self.fail()

    def nest(self) -> None:
        self.depth += 1
        if self.depth > NESTING_DEPTH_MAX:
            raise malformed("Statement nesting is too deep")

    # Statements.

    def statement(self) -> Statement:
        token = self.peek()
        if token.is_keyword("SELECT"):
            self.next()
            result: Statement = self.select()
        elif token.is_keyword("INSERT"):
            self.next()
            result = self.insert()
        elif token.is_keyword("UPDATE"):
            self.next()
            result = self.update()
        elif token.is_keyword("DELETE"):
            self.next()
            result = self.delete()
        elif token.is_keyword("EXISTS"):
            raise ValidationException(EXISTS_MESSAGE)
        else:
            raise self.fail()
        self.accept_punct(";")
        if self.peek().kind != "end":
            raise self.fail()
        # More parameters than `?` are accepted, as DynamoDB accepts them; fewer are refused
        # where the first unbound `?` is read.
        return result

    def name(self) -> str:
        token = self.next()
        if token.kind in ("ident", "quoted"):
            return token.text
        raise self.fail(token)

    def table(self) -> tuple[str, str | None]:
        table = self.name()
        index = None
        if self.accept_punct("."):
            index = self.name()
        return table, index

    def select(self) -> Select:
        projection: list[Path] | None = []
        star = False
        while True:
            if self.accept_punct("*"):
                star = True
            else:
                assert projection is not None
                projection.append(self.path())
                if self.peek().kind in ("ident", "quoted") and not self.peek().is_keyword("FROM"):
                    raise ValidationException(ALIAS_MESSAGE)
            if not self.accept_punct(","):
                break
        if star and projection:
            raise ValidationException(STAR_AND_OTHERS_MESSAGE)
        names = [result_name(path) for path in projection or []]
        for name in names:
            if names.count(name) > 1:
                raise ValidationException(f"Duplicate identifiers in select clause: {name}")
        if star:
            projection = None
        self.expect_keyword("FROM")
        table, index = self.table()
        where = self.where() if self.accept_keyword("WHERE") else None
        order: list[tuple[Path, bool]] = []
        if self.accept_keyword("ORDER", "BY"):
            while True:
                path = self.path()
                descending = False
                if self.accept_keyword("DESC"):
                    descending = True
                else:
                    self.accept_keyword("ASC")
                order.append((path, descending))
                if not self.accept_punct(","):
                    break
        for clause in ("LIMIT", "OFFSET", "GROUP", "HAVING"):
            if self.peek().is_keyword(clause):
                raise ValidationException(f"Unsupported clause: {clause}")
        return Select(
            table, index, None if projection is None else tuple(projection), where, tuple(order)
        )

    def insert(self) -> Insert:
        self.expect_keyword("INTO")
        table, index = self.table()
        if index is not None:
            raise ValidationException(DML_FROM_MESSAGE)
        if self.peek().is_keyword("VALUES"):
            raise ValidationException(
                "Unsupported operation: Inserting multiple items in a single statement is not "
                'supported, use "INSERT INTO tableName VALUE item" instead'
            )
        self.expect_keyword("VALUE")
        value = self.value()
        if "M" not in value:
            raise ValidationException(
                "Unsupported format in item expression. Please use struct format {...} to "
                "express item values for insert statement."
            )
        if self.peek().is_keyword("RETURNING"):
            raise ValidationException(INSERT_RETURNING_MESSAGE)
        return Insert(table, value["M"])

    def update(self) -> Update:
        table, index = self.table()
        if index is not None:
            raise ValidationException(DML_FROM_MESSAGE)
        actions: list[UpdateAction] = []
        while True:
            if self.accept_keyword("SET"):
                while True:
                    path = self.path()
                    self.expect_punct("=")
                    actions.append(UpdateAction("SET", path, self.operand()))
                    if not self.accept_punct(","):
                        break
            elif self.accept_keyword("REMOVE"):
                while True:
                    actions.append(UpdateAction("REMOVE", self.path()))
                    if not self.accept_punct(","):
                        break
            else:
                break
        if not actions:
            raise self.fail()
        where = self.where() if self.accept_keyword("WHERE") else None
        returning = self.returning()
        return Update(table, tuple(actions), where, returning)

    def delete(self) -> Delete:
        self.expect_keyword("FROM")
        table, index = self.table()
        if index is not None:
            raise ValidationException(DML_FROM_MESSAGE)
        where = self.where() if self.accept_keyword("WHERE") else None
        returning = self.returning()
        if returning is not None and returning != "ALL_OLD":
            shown = {v: f"{k[0]} {k[1]} *" for k, v in RETURNING_MODES.items()}[returning]
            raise ValidationException(
                f"Invalid returning clause: RETURNING {shown}. Only RETURNING ALL OLD * is "
                "allowed in DELETE statements."
            )
        return Delete(table, where, returning)

    def returning(self) -> str | None:
        if not self.accept_keyword("RETURNING"):
            return None
        first = self.next().text.upper()
        second = self.next().text.upper()
        mode = RETURNING_MODES.get((first, second))
        if mode is None:
            raise self.fail(self.tokens[self.position - 2])
        if not self.accept_punct("*"):
            raise ValidationException(
                "Expected '*' after ( MODIFIED | ALL ) ( NEW | OLD ) in RETURNING clause"
            )
        return mode

    # Conditions: OR < AND < NOT < predicate.

    def where(self) -> Condition:
        return self.disjunction()

    def disjunction(self) -> Condition:
        left = self.conjunction()
        while self.accept_keyword("OR"):
            left = Or(left, self.conjunction())
        return left

    def conjunction(self) -> Condition:
        left = self.negation()
        while self.accept_keyword("AND"):
            left = And(left, self.negation())
        return left

    def negation(self) -> Condition:
        if self.accept_keyword("NOT"):
            self.nest()
            result = Not(self.negation())
            self.depth -= 1
            return result
        return self.predicate()

    def predicate(self) -> Condition:
        token = self.peek()
        if token.is_keyword("EXISTS"):
            raise ValidationException(EXISTS_MESSAGE)
        if token.kind == "punct" and token.text == "(" and self._parenthesised_condition():
            self.next()
            self.nest()
            inner = self.disjunction()
            self.depth -= 1
            self.expect_punct(")")
            return inner
        if (
            token.kind == "ident"
            and self.peek(1).kind == "punct"
            and self.peek(1).text == "("
            and token.text.lower()
            in (
                "begins_with",
                "contains",
                "attribute_type",
                "attribute_exists",
                "attribute_not_exists",
            )
        ):
            self.next()
            self.next()
            args = [self.operand()]
            while self.accept_punct(","):
                args.append(self.operand())
            self.expect_punct(")")
            return Function(token.text.lower(), tuple(args))
        left = self.operand()
        if self.accept_keyword("IS"):
            if not isinstance(left, Path):
                raise ValidationException(
                    "The left hand side argument to IS must be a Variable Reference, Literal, or Path"
                )
            negated = self.accept_keyword("NOT")
            type_token = self.next()
            type_name = type_token.text.upper()
            if type_token.kind != "ident" or (type_name != "MISSING" and type_name not in IS_TYPES):
                raise ValidationException(
                    f"Unsupported data type for IS operator: {type_token.text}. Supported data "
                    "types are [MISSING, NULL, BOOLEAN, BLOB, STRING, NUMERIC, STRUCT, TUPLE, LIST]"
                )
            return Is(left, type_name, negated)
        negated = self.accept_keyword("NOT")
        if self.accept_keyword("BETWEEN"):
            low = self.operand()
            self.expect_keyword("AND")
            result: Condition = Between(left, low, self.operand())
        elif self.accept_keyword("IN"):
            result = In(left, self.in_list())
        elif negated:
            raise self.fail()
        else:
            op_token = self.next()
            if op_token.kind != "punct" or op_token.text not in COMPARISONS:
                raise self.fail(op_token)
            op = "<>" if op_token.text == "!=" else op_token.text
            result = Compare(op, left, self.operand())
        return Not(result) if negated else result

    def _parenthesised_condition(self) -> bool:
        """Whether the "(" ahead opens a condition rather than an IN list or a value: look for
        a condition keyword or operator before its matching ")"."""
        depth = 0
        for token in self.tokens[self.position :]:
            if token.kind == "punct" and token.text in ("(", "[", "{", "<<"):
                depth += 1
            elif token.kind == "punct" and token.text in (")", "]", "}", ">>"):
                depth -= 1
                if depth == 0:
                    return False
            elif depth == 1 and (
                (token.kind == "punct" and token.text in COMPARISONS)
                or any(token.is_keyword(w) for w in ("AND", "OR", "NOT", "IS", "BETWEEN", "IN"))
                or (
                    token.kind == "ident"
                    and token.text.lower()
                    in (
                        "begins_with",
                        "contains",
                        "attribute_type",
                        "attribute_exists",
                        "attribute_not_exists",
                    )
                )
            ):
                return True
            elif token.kind == "end":
                return False
        return False

    def in_list(self) -> tuple[Operand, ...]:
        if self.accept_punct("["):
            closing = "]"
        elif self.accept_punct("("):
            closing = ")"
        else:
            raise ValidationException(
                "IN operator must have a left hand argument of type Variable Reference and right "
                "hand argument of type Seq with at least one member"
            )
        values: list[Operand] = []
        if not self.accept_punct(closing):
            while True:
                values.append(self.operand())
                if not self.accept_punct(","):
                    break
            self.expect_punct(closing)
        if not values:
            raise ValidationException(
                "IN operator must have a left hand argument of type Variable Reference and right "
                "hand argument of type Seq with at least one member"
            )
        return tuple(values)

    # Operands.

    def operand(self) -> Operand:
        left = self.primary()
        while True:
            token = self.peek()
            if token.kind == "punct" and token.text in ("+", "-"):
                self.next()
                left = Arithmetic(token.text, left, self.primary())
            else:
                return left

    def primary(self) -> Operand:
        token = self.peek()
        if token.kind == "ident" and token.text.upper() == "MISSING":
            raise ValidationException(MISSING_COMPARED_MESSAGE)
        if (
            token.kind == "ident"
            and self.peek(1).kind == "punct"
            and self.peek(1).text == "("
            and token.text.upper() not in ("TRUE", "FALSE", "NULL")
        ):
            self.next()
            self.next()
            args: list[Operand] = []
            if not self.accept_punct(")"):
                while True:
                    args.append(self.operand())
                    if not self.accept_punct(","):
                        break
                self.expect_punct(")")
            return Call(token.text.lower(), tuple(args))
        if token.kind == "quoted" or (
            token.kind == "ident" and token.text.upper() not in ("TRUE", "FALSE", "NULL")
        ):
            return self.path()
        return Literal(self.value())

    def path(self) -> Path:
        parts: list[str | int] = [self.name()]
        while True:
            if self.accept_punct("."):
                parts.append(self.name())
            elif self.peek().kind == "punct" and self.peek().text == "[":
                self.next()
                token = self.next()
                if token.kind != "number" or not token.text.isdigit():
                    raise self.fail(token)
                self.expect_punct("]")
                parts.append(int(token.text))
            else:
                return Path(tuple(parts))

    def value(self) -> AttributeValue:
        """A literal or a parameter, as an AttributeValue."""
        token = self.next()
        if token.kind == "param":
            if self.used_parameters >= len(self.parameters):
                raise ValidationException(PARAMETER_COUNT_MESSAGE)
            value = self.parameters[self.used_parameters]
            self.used_parameters += 1
            return value
        if token.kind == "string":
            return {"S": token.text}
        if token.kind == "number":
            return {"N": token.text}
        if token.kind == "punct" and token.text == "-" and self.peek().kind == "number":
            return {"N": "-" + self.next().text}
        if token.kind == "punct" and token.text == "+" and self.peek().kind == "number":
            return {"N": self.next().text}
        if token.is_keyword("TRUE"):
            return {"BOOL": True}
        if token.is_keyword("FALSE"):
            return {"BOOL": False}
        if token.is_keyword("NULL"):
            return {"NULL": True}
        if token.kind == "punct" and token.text == "{":
            return self.struct()
        if token.kind == "punct" and token.text == "[":
            return self.list_value()
        if token.kind == "punct" and token.text == "<<":
            return self.bag()
        raise self.fail(token)

    def struct(self) -> AttributeValue:
        self.nest()
        members: dict[str, AttributeValue] = {}
        if not self.accept_punct("}"):
            while True:
                key_token = self.next()
                if key_token.kind != "string":
                    raise self.fail(key_token)
                self.expect_punct(":")
                value = self.value()
                if key_token.text in members:
                    raise ValidationException(
                        f"Duplicate keys in tuple. Key: {key_token.text} under item"
                    )
                members[key_token.text] = value
                if not self.accept_punct(","):
                    break
            self.expect_punct("}")
        self.depth -= 1
        return {"M": members}

    def list_value(self) -> AttributeValue:
        self.nest()
        values: list[AttributeValue] = []
        if not self.accept_punct("]"):
            while True:
                values.append(self.value())
                if not self.accept_punct(","):
                    break
            self.expect_punct("]")
        self.depth -= 1
        return {"L": values}

    def bag(self) -> AttributeValue:
        values: list[AttributeValue] = []
        if not self.accept_punct(">>"):
            while True:
                if self.peek().kind == "param":
                    # A set is bound whole, as one SS, NS or BS parameter.
                    raise ValidationException(BAG_TYPES_MESSAGE)
                values.append(self.value())
                if not self.accept_punct(","):
                    break
            self.expect_punct(">>")
        if not values:
            raise ValidationException("Empty bags are not supported")
        kinds = {next(iter(v)) for v in values}
        if len({set_member_identity(v) for v in values}) != len(values):
            raise ValidationException("Input collection contains duplicates")
        if kinds == {"S"}:
            return {"SS": [v["S"] for v in values]}
        if kinds == {"N"}:
            return {"NS": [v["N"] for v in values]}
        if kinds == {"B"}:
            return {"BS": [v["B"] for v in values]}
        raise ValidationException(BAG_TYPES_MESSAGE)


def set_member_identity(value: AttributeValue) -> tuple[str, str]:
    """A set member's identity: numbers by their value, strings and binaries by their text."""
    kind, member = next(iter(value.items()))
    if kind == "N":
        try:
            return kind, str(Decimal(member).normalize())
        except ArithmeticError:
            return kind, member
    return kind, str(member)


def result_name(path: Path) -> str:
    """The name a projected path has in the answer: its last attribute name and the list
    indexes after it (`SELECT m.k[1], m.z` answers `k[1]` and `z`), as DynamoDB answers."""
    last = max(i for i, part in enumerate(path.parts) if isinstance(part, str))
    name = str(path.parts[last])
    for part in path.parts[last + 1 :]:
        name += f"[{part}]"
    return name


def parse(text: str, parameters: list[AttributeValue] | None = None) -> Statement:
    """The statement `text` with its `?` bound to `parameters`, in order."""
    return _Parser(tokenize(text), list(parameters or [])).statement()
