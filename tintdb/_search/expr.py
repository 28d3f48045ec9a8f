"""The Search API's builders, as chromadb 1.5.9 names them: ``Search``, ``Key``/``K``,
the ``Where`` conditions, the rank expressions (``Knn``, ``Val``, ``Rrf``...), ``Limit``,
``Select``, ``GroupBy`` with ``MinK``/``MaxK``.

They only build the JSON that travels (``to_dict``) and read it back (``from_dict``);
nothing here searches. The JSON is Chroma's: the same object leaves chromadb's client
and tintdb's, so a payload built with either runs on either server. ``plan.parse``
checks it on the way in (embedded and over HTTP alike).

Over 500 lines because the builders are many small ``to_dict``/``from_dict`` pairs, and
reading a kind back (``Where.from_dict``, ``Rank.from_dict``) must know every class of
that kind; ``Search`` composes them all. What would split off cleanly: the ``Where``
conditions and the rank expressions, one module each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .sparse import SparseVector, is_sparse, sparse_from_any

__all__ = [
    "Abs",
    "Aggregate",
    "And",
    "Contains",
    "Div",
    "Eq",
    "Exp",
    "GroupBy",
    "Gt",
    "Gte",
    "In",
    "K",
    "Key",
    "Knn",
    "Limit",
    "Log",
    "Lt",
    "Lte",
    "Max",
    "MaxK",
    "Min",
    "MinK",
    "Mul",
    "Ne",
    "Nin",
    "NotContains",
    "NotRegex",
    "Or",
    "Rank",
    "Regex",
    "Rrf",
    "Search",
    "Select",
    "Sub",
    "Sum",
    "Val",
    "Where",
]


def _fail(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(message)


def _one(data: Any, what: str) -> tuple[str, Any]:
    if not isinstance(data, Mapping):
        raise _fail(f"{what} must be a dict, got {type(data).__name__}")
    if len(data) != 1:
        raise _fail(f"{what} must hold exactly one key, got {len(data)}: {list(data)!r}")
    return next(iter(data.items()))


# ---------------------------------------------------------------- where


class Where:
    """A filter condition; combine with ``&`` (all of) and ``|`` (any of)."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __and__(self, other: Where) -> And:
        return And(_flat(And, self) + _flat(And, other))

    def __or__(self, other: Where) -> Or:
        return Or(_flat(Or, self) + _flat(Or, other))

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Where:
        """A condition from its JSON (``{"k": v}``, ``{"k": {"$op": v}}``, ``$and``/``$or``)."""
        key, value = _one(data, "A where clause")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise _fail(f"{key} needs a non-empty list of conditions, got {value!r}")
            parts = [Where.from_dict(c) for c in value]
            if len(parts) == 1:
                return parts[0]
            return And(parts) if key == "$and" else Or(parts)
        if not isinstance(key, str):
            raise _fail(f"A where key must be a str, got {key!r}")
        if not isinstance(value, Mapping):
            return Eq(key, value)
        op, operand = _one(value, f"The condition on {key!r}")
        maker = _OPERATORS.get(op)
        if maker is None:
            raise _fail(f"Unknown where operator {op!r} on {key!r}; use one of {list(_OPERATORS)}")
        return maker(key, operand)


def _flat(kind: type, where: Where) -> list[Where]:
    return list(where.conditions) if isinstance(where, kind) else [where]  # type: ignore[attr-defined]


@dataclass
class And(Where):
    conditions: list[Where]

    def to_dict(self) -> dict[str, Any]:
        return {"$and": [c.to_dict() for c in self.conditions]}


@dataclass
class Or(Where):
    conditions: list[Where]

    def to_dict(self) -> dict[str, Any]:
        return {"$or": [c.to_dict() for c in self.conditions]}


@dataclass
class _Compare(Where):
    key: str
    value: Any
    op = ""

    def to_dict(self) -> dict[str, Any]:
        return {self.key: {self.op: self.value}}


class Eq(_Compare):
    op = "$eq"


class Ne(_Compare):
    op = "$ne"


class Gt(_Compare):
    op = "$gt"


class Gte(_Compare):
    op = "$gte"


class Lt(_Compare):
    op = "$lt"


class Lte(_Compare):
    op = "$lte"


class Contains(_Compare):
    op = "$contains"


class NotContains(_Compare):
    op = "$not_contains"


@dataclass
class In(Where):
    key: str
    values: list[Any]
    op = "$in"

    def to_dict(self) -> dict[str, Any]:
        return {self.key: {self.op: list(self.values)}}


class Nin(In):
    op = "$nin"


@dataclass
class Regex(Where):
    key: str
    pattern: str
    op = "$regex"

    def to_dict(self) -> dict[str, Any]:
        return {self.key: {self.op: self.pattern}}


class NotRegex(Regex):
    op = "$not_regex"


_OPERATORS: dict[str, Any] = {
    "$eq": Eq,
    "$ne": Ne,
    "$gt": Gt,
    "$gte": Gte,
    "$lt": Lt,
    "$lte": Lte,
    "$in": In,
    "$nin": Nin,
    "$contains": Contains,
    "$not_contains": NotContains,
    "$regex": Regex,
    "$not_regex": NotRegex,
}


class Key:
    """A field of a record: ``K("year")`` a metadata key, ``K.DOCUMENT``, ``K.ID``,
    ``K.EMBEDDING``, ``K.METADATA``, ``K.SCORE`` the reserved ones (named with '#').
    Comparisons build conditions: ``K("year") >= 2020``, ``K.ID.is_in([...])``."""

    ID: Key
    DOCUMENT: Key
    EMBEDDING: Key
    METADATA: Key
    SCORE: Key

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Key({self.name!r})"

    def __hash__(self) -> int:
        return hash(self.name)

    # Comparisons build conditions (so a Key is not compared by ==, as in chromadb).
    def __eq__(self, value: Any) -> Eq:  # type: ignore[override]
        return Eq(self.name, value)

    def __ne__(self, value: Any) -> Ne:  # type: ignore[override]
        return Ne(self.name, value)

    def __gt__(self, value: Any) -> Gt:
        return Gt(self.name, value)

    def __ge__(self, value: Any) -> Gte:
        return Gte(self.name, value)

    def __lt__(self, value: Any) -> Lt:
        return Lt(self.name, value)

    def __le__(self, value: Any) -> Lte:
        return Lte(self.name, value)

    def is_in(self, values: Iterable[Any]) -> In:
        return In(self.name, list(values))

    def not_in(self, values: Iterable[Any]) -> Nin:
        return Nin(self.name, list(values))

    def contains(self, value: Any) -> Contains:
        """A substring of ``K.DOCUMENT``, or an element of a list-valued metadata key."""
        return Contains(self.name, value)

    def not_contains(self, value: Any) -> NotContains:
        return NotContains(self.name, value)

    def regex(self, pattern: str) -> Regex:
        return Regex(self.name, pattern)

    def not_regex(self, pattern: str) -> NotRegex:
        return NotRegex(self.name, pattern)


Key.ID = Key("#id")
Key.DOCUMENT = Key("#document")
Key.EMBEDDING = Key("#embedding")
Key.METADATA = Key("#metadata")
Key.SCORE = Key("#score")
K = Key


def _key_name(key: Key | str) -> str:
    if isinstance(key, Key):
        return key.name
    if isinstance(key, str):
        return key
    raise _fail(f"A key must be a Key or a str, got {type(key).__name__}")


# ---------------------------------------------------------------- ranks


def _rank(value: Rank | float | int) -> Rank:
    if isinstance(value, Rank):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Val(value)
    raise _fail(f"A rank expression or a number was expected, got {type(value).__name__}")


class Rank:
    """A score per record, lower is better: ``Knn`` distances and positions combined
    with numbers and each other (``+ - * /``, ``abs``, ``exp``, ``log``, ``max``, ``min``)."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Rank:
        return _rank_from_dict(data)

    def __add__(self, other: Rank | float) -> Sum:
        return Sum(_flat_ranks(Sum, self) + _flat_ranks(Sum, _rank(other)))

    def __radd__(self, other: float) -> Sum:
        return _rank(other) + self

    def __sub__(self, other: Rank | float) -> Sub:
        return Sub(self, _rank(other))

    def __rsub__(self, other: float) -> Sub:
        return Sub(_rank(other), self)

    def __mul__(self, other: Rank | float) -> Mul:
        return Mul(_flat_ranks(Mul, self) + _flat_ranks(Mul, _rank(other)))

    def __rmul__(self, other: float) -> Mul:
        return _rank(other) * self

    def __truediv__(self, other: Rank | float) -> Div:
        return Div(self, _rank(other))

    def __rtruediv__(self, other: float) -> Div:
        return Div(_rank(other), self)

    def __neg__(self) -> Mul:
        return Mul([Val(-1), self])

    def __abs__(self) -> Abs:
        return Abs(self)

    def abs(self) -> Abs:
        return Abs(self)

    def exp(self) -> Exp:
        return Exp(self)

    def log(self) -> Log:
        return Log(self)

    def max(self, other: Rank | float) -> Max:
        return Max(_flat_ranks(Max, self) + _flat_ranks(Max, _rank(other)))

    def min(self, other: Rank | float) -> Min:
        return Min(_flat_ranks(Min, self) + _flat_ranks(Min, _rank(other)))


def _flat_ranks(kind: type, rank: Rank) -> list[Rank]:
    return list(rank.ranks) if type(rank) is kind else [rank]  # type: ignore[attr-defined]


@dataclass
class Val(Rank):
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"$val": self.value}


@dataclass
class _Many(Rank):
    ranks: list[Rank]
    op = ""

    def to_dict(self) -> dict[str, Any]:
        return {self.op: [r.to_dict() for r in self.ranks]}


class Sum(_Many):
    op = "$sum"


class Mul(_Many):
    op = "$mul"


class Max(_Many):
    op = "$max"


class Min(_Many):
    op = "$min"


@dataclass
class _Pair(Rank):
    left: Rank
    right: Rank
    op = ""

    def to_dict(self) -> dict[str, Any]:
        return {self.op: {"left": self.left.to_dict(), "right": self.right.to_dict()}}


class Sub(_Pair):
    op = "$sub"


class Div(_Pair):
    op = "$div"


@dataclass
class _One(Rank):
    rank: Rank
    op = ""

    def to_dict(self) -> dict[str, Any]:
        return {self.op: self.rank.to_dict()}


class Abs(_One):
    op = "$abs"


class Exp(_One):
    op = "$exp"


class Log(_One):
    op = "$log"


QueryVector = str | list[float] | SparseVector | np.ndarray | Mapping[str, Any]


@dataclass
class Knn(Rank):
    """The ``limit`` nearest records to ``query`` on ``key`` (the dense embedding by
    default, or a metadata key holding sparse vectors), scored by distance, or by their
    position in that list (0, 1, ...) with ``return_rank=True``. Records outside the
    list score ``default``; with ``default=None`` they drop out of the whole expression.
    A str query is embedded by the collection's function for that key."""

    query: QueryVector
    key: Key | str = field(default_factory=lambda: Key.EMBEDDING)
    limit: int = 16
    default: float | None = None
    return_rank: bool = False

    def to_dict(self) -> dict[str, Any]:
        query: Any = self.query
        if isinstance(query, np.ndarray):
            query = query.tolist()
        elif is_sparse(query):
            query = sparse_from_any(query, "Knn query")
        elif isinstance(query, (list, tuple)) and not any(type(x) is bool for x in query):
            # numpy scalars too: JSON holds plain numbers (anything else is left as given,
            # for the checks to name)
            with contextlib.suppress(TypeError, ValueError):
                query = np.asarray(query, dtype=np.float64).tolist()
        out: dict[str, Any] = {"query": query, "key": _key_name(self.key), "limit": self.limit}
        if self.default is not None:
            out["default"] = self.default
        if self.return_rank:
            out["return_rank"] = True
        return {"$knn": out}


@dataclass
class Rrf(Rank):
    """Reciprocal rank fusion: ``-sum(weight_i / (k + rank_i))`` over ``ranks`` (each
    usually a ``Knn(..., return_rank=True)``), so that a record near the top of any list
    scores low (better). ``weights`` default to 1 each; ``normalize`` scales them to sum
    to 1. It travels as that arithmetic, not as an operator of its own."""

    ranks: list[Rank]
    k: int = 60
    weights: list[float] | None = None
    normalize: bool = False

    def to_dict(self) -> dict[str, Any]:
        if not self.ranks:
            raise _fail("Rrf needs at least one rank")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, float)) or self.k <= 0:
            raise _fail(f"Rrf k must be a positive number, got {self.k!r}")
        weights = [1.0] * len(self.ranks) if self.weights is None else list(self.weights)
        if len(weights) != len(self.ranks):
            raise _fail(f"Rrf has {len(self.ranks)} ranks but {len(weights)} weights")
        if any(w < 0 for w in weights):
            raise _fail("Rrf weights must not be negative")
        if self.normalize:
            total = sum(weights)
            if total == 0:
                raise _fail("Rrf weights sum to 0: they cannot be normalized")
            weights = [w / total for w in weights]
        terms: list[Rank] = [w / (self.k + r) for w, r in zip(weights, self.ranks, strict=True)]
        fused = terms[0]
        for term in terms[1:]:
            fused = fused + term
        return (-fused).to_dict()


def _rank_list(value: Any, op: str) -> list[Rank]:
    if not isinstance(value, list) or len(value) < 2:
        raise _fail(f"{op} needs a list of at least 2 ranks, got {value!r}")
    return [_rank_from_dict(v) for v in value]


def _rank_pair(value: Any, op: str) -> tuple[Rank, Rank]:
    if not isinstance(value, Mapping) or set(value) != {"left", "right"}:
        raise _fail(f"{op} needs {{'left': rank, 'right': rank}}, got {value!r}")
    return _rank_from_dict(value["left"]), _rank_from_dict(value["right"])


def _rank_from_dict(data: Any) -> Rank:
    op, value = _one(data, "A rank expression")
    if op == "$val":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(f"$val needs a number, got {value!r}")
        return Val(value)
    if op == "$knn":
        if not isinstance(value, Mapping) or "query" not in value:
            raise _fail(f"$knn needs a dict with a 'query', got {value!r}")
        return Knn(
            query=value["query"],
            key=value.get("key", "#embedding"),
            limit=value.get("limit", 16),
            default=value.get("default"),
            return_rank=value.get("return_rank", False),
        )
    if op in ("$sum", "$mul", "$max", "$min"):
        kind = {"$sum": Sum, "$mul": Mul, "$max": Max, "$min": Min}[op]
        return kind(_rank_list(value, op))
    if op in ("$sub", "$div"):
        left, right = _rank_pair(value, op)
        return Sub(left, right) if op == "$sub" else Div(left, right)
    if op in ("$abs", "$exp", "$log"):
        kind1 = {"$abs": Abs, "$exp": Exp, "$log": Log}[op]
        return kind1(_rank_from_dict(value))
    raise _fail(f"Unknown rank operator {op!r}")


# ---------------------------------------------------------------- limit, select, group_by


@dataclass
class Limit:
    """``limit`` records (all if None) after skipping ``offset``."""

    offset: int = 0
    limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"offset": self.offset}
        if self.limit is not None:
            out["limit"] = self.limit
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Limit:
        if not isinstance(data, Mapping) or set(data) - {"offset", "limit"}:
            raise _fail(f"A limit is {{'offset': int, 'limit': int}}, got {data!r}")
        return Limit(offset=data.get("offset", 0), limit=data.get("limit"))


@dataclass
class Select:
    """Which fields come back besides ids: ``K.DOCUMENT``, ``K.EMBEDDING``,
    ``K.METADATA``, ``K.SCORE`` and individual metadata keys."""

    keys: set[Key | str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {"keys": list(dict.fromkeys(_key_name(k) for k in self.keys))}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Select:
        if not isinstance(data, Mapping) or set(data) - {"keys"}:
            raise _fail(f"A select is {{'keys': [...]}}, got {data!r}")
        keys = data.get("keys", [])
        if not isinstance(keys, (list, tuple, set)) or not all(isinstance(k, str) for k in keys):
            raise _fail(f"Select keys must be a list of str, got {keys!r}")
        return Select(keys={Key(k) for k in keys})


def _key_list(keys: Any) -> list[str]:
    if isinstance(keys, (Key, str)):
        return [_key_name(keys)]
    return [_key_name(k) for k in keys]


class Aggregate:
    """What each group keeps: ``MinK`` (lowest values first) or ``MaxK``."""

    op = ""

    def __init__(self, keys: Key | str | Iterable[Key | str], k: int) -> None:
        self.keys = keys
        self.k = k

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={self.keys!r}, k={self.k!r})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and _key_list(self.keys) == _key_list(other.keys)
            and self.k == other.k
        )

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {self.op: {"keys": _key_list(self.keys), "k": self.k}}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Aggregate:
        op, value = _one(data, "An aggregate")
        kind = {"$min_k": MinK, "$max_k": MaxK}.get(op)
        if kind is None:
            raise _fail(f"Unknown aggregate {op!r}; use $min_k or $max_k")
        if not isinstance(value, Mapping) or "keys" not in value or "k" not in value:
            raise _fail(f"{op} needs {{'keys': [...], 'k': int}}, got {value!r}")
        return kind(keys=list(value["keys"]), k=value["k"])


class MinK(Aggregate):
    """Keep the ``k`` records of each group with the lowest ``keys`` (``K.SCORE``: the best)."""

    op = "$min_k"


class MaxK(Aggregate):
    """Keep the ``k`` records of each group with the highest ``keys``."""

    op = "$max_k"


@dataclass
class GroupBy:
    """Group the ranked records by metadata ``keys``; ``aggregate`` picks which of each
    group stay; the survivors come back ordered by score."""

    keys: Any = field(default_factory=list)
    aggregate: Aggregate | None = None

    def to_dict(self) -> dict[str, Any]:
        if not self.keys or self.aggregate is None:
            return {}
        return {"keys": _key_list(self.keys), "aggregate": self.aggregate.to_dict()}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> GroupBy:
        if not isinstance(data, Mapping):
            raise _fail(f"A group_by must be a dict, got {data!r}")
        if not data:
            return GroupBy()
        if set(data) != {"keys", "aggregate"}:
            raise _fail(f"A group_by needs 'keys' and 'aggregate', got {sorted(data)!r}")
        return GroupBy(keys=list(data["keys"]), aggregate=Aggregate.from_dict(data["aggregate"]))


# ---------------------------------------------------------------- search


class Search:
    """One search: ``where`` filters, ``rank`` scores (lower is better), ``group_by``
    groups, ``limit`` pages, ``select`` picks fields. Builder methods return a new
    Search: ``Search().where(K("a") == 1).rank(Knn(query=v)).limit(10).select(K.SCORE)``.
    Each argument also takes its JSON form (a dict, or an int for ``limit``)."""

    def __init__(
        self,
        where: Where | Mapping[str, Any] | None = None,
        rank: Rank | Mapping[str, Any] | None = None,
        group_by: GroupBy | Mapping[str, Any] | None = None,
        limit: Limit | Mapping[str, Any] | int | None = None,
        select: Select | Mapping[str, Any] | Iterable[Key | str] | None = None,
    ) -> None:
        self._where = _coerce(where, Where, Where.from_dict, "where")
        self._rank = _coerce(rank, Rank, Rank.from_dict, "rank")
        self._group_by = _coerce(group_by, GroupBy, GroupBy.from_dict, "group_by") or GroupBy()
        if isinstance(limit, int) and not isinstance(limit, bool):
            limit = Limit(offset=0, limit=limit)
        self._limit = _coerce(limit, Limit, Limit.from_dict, "limit") or Limit()
        if select is not None and not isinstance(select, (Select, Mapping)):
            if isinstance(select, (str, Key)):
                raise _fail("select takes a list of keys, not a single key")
            select = Select(keys=set(select))
        self._select = _coerce(select, Select, Select.from_dict, "select") or Select()

    def __repr__(self) -> str:
        return f"Search({self.to_dict()!r})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "filter": None if self._where is None else self._where.to_dict(),
            "rank": None if self._rank is None else self._rank.to_dict(),
            "group_by": self._group_by.to_dict(),
            "limit": self._limit.to_dict(),
            "select": self._select.to_dict(),
        }

    def _with(self, **changes: Any) -> Search:
        parts = {
            "where": self._where,
            "rank": self._rank,
            "group_by": self._group_by,
            "limit": self._limit,
            "select": self._select,
        }
        parts.update(changes)
        return Search(**parts)

    def where(self, where: Where | Mapping[str, Any] | None) -> Search:
        return self._with(where=where)

    def rank(self, rank: Rank | Mapping[str, Any] | None) -> Search:
        return self._with(rank=rank)

    def group_by(self, group_by: GroupBy | Mapping[str, Any] | None) -> Search:
        return self._with(group_by=group_by)

    def limit(self, limit: int, offset: int = 0) -> Search:
        return self._with(limit=Limit(offset=offset, limit=limit))

    def select(self, *keys: Key | str) -> Search:
        return self._with(select=Select(keys=set(keys)))

    def select_all(self) -> Search:
        return self._with(select=Select(keys={K.DOCUMENT, K.EMBEDDING, K.METADATA, K.SCORE}))


def _coerce(value: Any, kind: type, from_dict: Any, what: str) -> Any:
    if value is None or isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        return from_dict(value)
    raise _fail(
        f"Search {what} must be a {kind.__name__}, a dict or None, got {type(value).__name__}"
    )
